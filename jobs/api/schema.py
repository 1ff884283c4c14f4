"""OpenAPI descriptions of our two token schemes (drf-spectacular cannot tell them apart by itself)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "portal.accounts.auth.ApiTokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "Authorization",
                "description": "Personal API token: `Token <key>`"}


class WorkerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "jobs.api.worker.WorkerTokenAuthentication"
    name = "workerToken"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "Authorization",
                "description": "Worker token from enrollment: `Worker <key>`"}
