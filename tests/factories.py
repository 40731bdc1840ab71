"""factory_boy factories for the domain models. Tests build exactly what they need."""

from __future__ import annotations

import base64
import io

import factory
from django.contrib.auth import get_user_model
from PIL import Image

from reviewqueue.core.models import Agent, Step, StepKind, StepStatus, Trace
from reviewqueue.review.models import Queue, ReviewItem
from reviewqueue.routing.models import RoutingRule


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"reviewer{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("pw-for-tests-1")


class AgentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Agent
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"agent-{n}")


class TraceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Trace

    agent = factory.SubFactory(AgentFactory)
    external_id = factory.Sequence(lambda n: f"trace-{n}")


class StepFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Step

    agent = factory.SubFactory(AgentFactory)
    external_id = factory.Sequence(lambda n: f"step-{n}")
    kind = StepKind.LLM
    name = "gpt-4o-mini"
    input = factory.LazyFunction(lambda: [{"role": "user", "content": "Where is my order A123?"}])
    output = factory.LazyFunction(lambda: {"role": "assistant", "content": "It shipped yesterday."})
    confidence = 0.5
    metadata = factory.LazyFunction(dict)
    status = StepStatus.PENDING_REVIEW


class QueueFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Queue
        django_get_or_create = ("slug",)
        skip_postgeneration_save = True

    slug = factory.Sequence(lambda n: f"queue-{n}")
    name = factory.LazyAttribute(lambda q: q.slug.replace("-", " ").title())
    reviews_required = 1
    lease_seconds = 300

    @factory.post_generation
    def members(self, create: bool, extracted: list | None, **kwargs: object) -> None:
        if create and extracted:
            self.members.add(*extracted)


class ReviewItemFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ReviewItem

    queue = factory.SubFactory(QueueFactory)
    step = factory.SubFactory(StepFactory)
    priority = 0
    blocking = factory.LazyAttribute(lambda item: item.step.blocking)


class RoutingRuleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RoutingRule
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"rule-{n}")
    position = factory.Sequence(lambda n: n * 10)
    conditions = factory.LazyFunction(list)
    action = "route"
    queue = factory.SubFactory(QueueFactory)


def png_b64(size: tuple[int, int] = (20, 10), color: str = "green") -> str:
    """A real PNG image of `size`, base64-encoded as the steps API takes attachments."""
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()
