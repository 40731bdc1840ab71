"""Admin API for routing rules (DESIGN §4): /api/v1/rules and /api/v1/rules/{id}. Staff only.

Serializers shape the input; reviewqueue.routing.services validates, versions and audits."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import get_object_or_404
from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from reviewqueue.routing.models import RoutingRule, RoutingRuleVersion, RuleAction
from reviewqueue.routing.services import create_rule, delete_rule, update_rule


class RuleSerializer(serializers.ModelSerializer):
    queue = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    conditions = serializers.JSONField(
        help_text='All must hold: [{"field": "confidence" | "kind" | "name" | "agent" | "metadata.<path>", '
        '"op": "lt" | "lte" | "gt" | "gte" | "eq" | "ne" | "in" | "glob" | "exists" | "missing", "value": ...}]'
    )

    class Meta:
        model = RoutingRule
        fields = [
            "id",
            "name",
            "position",
            "enabled",
            "conditions",
            "sample_rate",
            "action",
            "queue",
            "priority",
            "version",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class RuleInputSerializer(serializers.Serializer):
    """Types only; the routing service checks the rest (conditions, queue, uniqueness)."""

    name = serializers.CharField(max_length=100)
    position = serializers.IntegerField(required=False)
    enabled = serializers.BooleanField(required=False)
    conditions = serializers.JSONField(required=False)
    sample_rate = serializers.FloatField(required=False, min_value=0, max_value=1)
    action = serializers.ChoiceField(choices=RuleAction.choices, required=False)
    queue = serializers.CharField(required=False, allow_null=True, allow_blank=True, help_text="queue slug")
    priority = serializers.IntegerField(required=False)


class RuleVersionSerializer(serializers.ModelSerializer):
    changed_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)

    class Meta:
        model = RoutingRuleVersion
        fields = ["id", "rule_name", "version", "snapshot", "changed_by", "created_at"]
        read_only_fields = fields


def _validated(request: Request, *, partial: bool) -> dict[str, Any]:
    serializer = RuleInputSerializer(data=request.data, partial=partial)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _service_errors(exc: DjangoValidationError) -> serializers.ValidationError:
    return serializers.ValidationError(
        exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
    )


class StaffAPIView(APIView):
    permission_classes = [IsAdminUser]


class RuleListView(StaffAPIView):
    @extend_schema(responses=RuleSerializer(many=True), summary="List routing rules in evaluation order")
    def get(self, request: Request) -> Response:
        rules = RoutingRule.objects.select_related("queue").order_by("position", "id")
        return Response(RuleSerializer(rules, many=True).data)

    @extend_schema(request=RuleInputSerializer, responses={201: RuleSerializer}, summary="Create a routing rule")
    def post(self, request: Request) -> Response:
        data = _validated(request, partial=False)
        try:
            rule = create_rule(data=data, actor=request.user)
        except DjangoValidationError as exc:
            raise _service_errors(exc) from None
        return Response(RuleSerializer(rule).data, status=status.HTTP_201_CREATED)


class RuleDetailView(StaffAPIView):
    @extend_schema(responses=RuleSerializer, summary="Read a routing rule")
    def get(self, request: Request, id: int) -> Response:
        return Response(RuleSerializer(get_object_or_404(RoutingRule.objects.select_related("queue"), pk=id)).data)

    @extend_schema(request=RuleInputSerializer, responses=RuleSerializer, summary="Change a routing rule (new version)")
    def patch(self, request: Request, id: int) -> Response:
        rule = get_object_or_404(RoutingRule, pk=id)
        data = _validated(request, partial=True)
        try:
            rule = update_rule(rule=rule, data=data, actor=request.user)
        except DjangoValidationError as exc:
            raise _service_errors(exc) from None
        return Response(RuleSerializer(rule).data)

    @extend_schema(responses={204: None}, summary="Delete a routing rule (its versions are kept)")
    def delete(self, request: Request, id: int) -> Response:
        delete_rule(rule=get_object_or_404(RoutingRule, pk=id), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class RuleVersionsView(StaffAPIView):
    @extend_schema(responses=RuleVersionSerializer(many=True), summary="Every saved version of a rule, newest first")
    def get(self, request: Request, id: int) -> Response:
        rule = get_object_or_404(RoutingRule, pk=id)
        versions = rule.versions.select_related("changed_by").order_by("-version")
        return Response(RuleVersionSerializer(versions, many=True).data)


urlpatterns = [
    path("rules", RuleListView.as_view(), name="rule-list"),
    path("rules/<int:id>", RuleDetailView.as_view(), name="rule-detail"),
    path("rules/<int:id>/versions", RuleVersionsView.as_view(), name="rule-versions"),
]
