"""A WSGI app for the gunicorn worker tests: answers every request after reading its whole body."""


def app(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello %d\n" % len(body)]
