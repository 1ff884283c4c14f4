"""The model registry in the API: `GET /api/v1/models/` lists the trained models you may fit with (yours,
those shared with your institutions, bundled ones); you may rename, share and delete your own."""

from __future__ import annotations

from rest_framework import mixins, serializers, viewsets
from rest_framework.exceptions import PermissionDenied

from jobs import trained_models
from jobs.models import TrainedModel


class TrainedModelSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", default=None, read_only=True)
    file = serializers.UUIDField(source="file_id", read_only=True, help_text="the file id a fit's `model` takes")
    size = serializers.IntegerField(source="file.size", read_only=True)
    mine = serializers.SerializerMethodField()

    class Meta:
        model = TrainedModel
        fields = ["id", "name", "owner", "mine", "visibility", "file", "size", "train_job", "params",
                  "calibration_sha256", "code_version", "metrics", "created_at"]
        read_only_fields = ["id", "owner", "mine", "file", "size", "train_job", "params", "calibration_sha256",
                            "code_version", "metrics", "created_at"]
        extra_kwargs = {"name": {"max_length": 200}}

    def get_mine(self, model: TrainedModel) -> bool:
        return model.owner_id == self.context["request"].user.pk


class TrainedModelViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.UpdateModelMixin,
                          mixins.DestroyModelMixin, viewsets.GenericViewSet):
    serializer_class = TrainedModelSerializer
    http_method_names = ["get", "patch", "delete", "head", "options"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return TrainedModel.objects.none()
        return trained_models.visible(self.request.user).select_related("owner", "file")

    def _own(self, model: TrainedModel) -> TrainedModel:
        if model.owner_id != self.request.user.pk:
            raise PermissionDenied("only its owner may change or delete a model")
        return model

    def perform_update(self, serializer):
        self._own(serializer.instance)
        serializer.save()

    def perform_destroy(self, instance):
        # The row goes; its file stays an output of the job that trained it.
        self._own(instance).delete()
