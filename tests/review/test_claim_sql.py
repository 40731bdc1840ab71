"""The hand-written claim and lock SQL (services.claim_next_item, services._lock_item, core/rows):
every tier and its edge cases, the audit trail, stored values as the ORM stores them, the query
counts, and the API's answers for access and lost leases."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from reviewqueue.core import rows
from reviewqueue.core.models import AuditEvent
from reviewqueue.review import services
from reviewqueue.review.models import ItemStatus, Review, ReviewItem
from reviewqueue.review.services import assign_item, claim_next_item, release_item, submit_review
from tests.factories import QueueFactory, ReviewItemFactory, StepFactory, UserFactory

pytestmark = pytest.mark.django_db


def claim_events(item: ReviewItem) -> list[AuditEvent]:
    return list(
        AuditEvent.objects.filter(object_type="reviewitem", object_id=str(item.pk), action="item.claimed").order_by(
            "id"
        )
    )


def hold(item: ReviewItem, user, *, expired: bool) -> None:
    """Make `item` claimed by `user`, with a lease that ran out (or not)."""
    now = timezone.now()
    lease = now - timedelta(seconds=5) if expired else now + timedelta(seconds=300)
    ReviewItem.objects.filter(pk=item.pk).update(
        status=ItemStatus.CLAIMED, claimed_by=user, claimed_at=now, lease_expires_at=lease
    )


def test_the_claimed_row_matches_what_the_orm_reads_and_stores(queue, alice) -> None:
    item = ReviewItemFactory(queue=queue, step=StepFactory(blocking=True), priority=3)
    claimed = claim_next_item(queue=queue, user=alice)
    stored = ReviewItem.objects.get(pk=item.pk)
    for field in ReviewItem._meta.concrete_fields:
        assert getattr(claimed, field.attname) == getattr(stored, field.attname), field.name
    assert claimed.blocking is True and timezone.is_aware(claimed.lease_expires_at)
    assert claimed.claimed_by == alice and claimed.queue == queue
    # times are stored as the ORM stores them, so ORM filters on them work (SQLite: naive UTC text)
    assert ReviewItem.objects.filter(pk=item.pk, lease_expires_at=claimed.lease_expires_at).exists()
    assert ReviewItem.objects.filter(pk=item.pk, lease_expires_at__gt=timezone.now()).exists()
    (event,) = claim_events(item)
    assert event.before == {"status": "pending", "claimed_by": None, "lease_expires_at": None}
    assert event.after == {
        "status": "claimed",
        "claimed_by": alice.pk,
        "lease_expires_at": claimed.lease_expires_at.isoformat(),
    }
    assert event.actor == alice
    # PostgreSQL writes it in the claiming statement: the same row as `audit.record` writes
    assert (event.actor_label, event.actor_agent, event.object_type) == ("alice", None, "reviewitem")
    assert event.created_at <= timezone.now() and timezone.is_aware(event.created_at)


def test_an_assigned_item_held_on_an_expired_lease_goes_to_its_assignee_first(queue, alice, bob, boss) -> None:
    ReviewItemFactory(queue=queue, priority=9)  # a better pending item, not assigned
    mine = ReviewItemFactory(queue=queue)
    assign_item(item=mine, assignee=alice, actor=boss)
    hold(mine, bob, expired=True)
    lease = ReviewItem.objects.get(pk=mine.pk).lease_expires_at
    assert claim_next_item(queue=queue, user=alice).pk == mine.pk
    (event,) = claim_events(mine)
    assert event.before == {"status": "claimed", "claimed_by": bob.pk, "lease_expires_at": lease.isoformat()}


def test_a_live_claim_is_resumed_before_an_assigned_item(queue, alice, boss) -> None:
    held, assigned = ReviewItemFactory(queue=queue), ReviewItemFactory(queue=queue, priority=9)
    hold(held, alice, expired=False)
    assign_item(item=assigned, assignee=alice, actor=boss)
    assert claim_next_item(queue=queue, user=alice).pk == held.pk
    assert not claim_events(held)  # resuming is not a new claim
    assert claim_next_item(queue=queue, user=alice).pk == held.pk


def test_an_assigned_item_already_reviewed_is_skipped_for_the_pending_ones(alice, bob, boss) -> None:
    queue = QueueFactory(slug="twice", members=[alice, bob], reviews_required=2)
    assigned, other = ReviewItemFactory(queue=queue, priority=9), ReviewItemFactory(queue=queue)
    assert claim_next_item(queue=queue, user=alice).pk == assigned.pk
    submit_review(item_id=assigned.pk, user=alice, verdict="approve")  # 1 of 2: back to pending
    assign_item(item=ReviewItem.objects.get(pk=assigned.pk), assignee=bob, actor=boss)
    ReviewItem.objects.filter(pk=assigned.pk).update(assigned_to=alice)  # as if assigned before her review
    assert claim_next_item(queue=queue, user=alice).pk == other.pk


def test_expired_leases_are_claimable_after_the_pending_items_and_never_by_a_past_reviewer(alice, bob) -> None:
    carol = UserFactory(username="carol")
    queue = QueueFactory(slug="twice", members=[alice, bob, carol], reviews_required=2)
    item = ReviewItemFactory(queue=queue)
    claim_next_item(queue=queue, user=alice)
    submit_review(item_id=item.pk, user=alice, verdict="approve")
    pending = ReviewItemFactory(queue=queue)
    hold(item, bob, expired=True)
    assert claim_next_item(queue=queue, user=carol).pk == pending.pk  # pending before expired
    assert claim_next_item(queue=queue, user=alice) is None  # reviewed `item` already; `pending` is carol's
    release_item(item_id=pending.pk, user=carol)
    assert claim_next_item(queue=queue, user=carol).pk == pending.pk  # her own live claim again
    dave = UserFactory(username="dave")
    queue.members.add(dave)
    assert claim_next_item(queue=queue, user=dave).pk == item.pk  # the expired lease
    event = claim_events(item)[-1]
    assert event.before["claimed_by"] == bob.pk and event.actor == dave


def test_exclude_applies_to_every_tier(queue, alice, bob, boss) -> None:
    assigned, pending, expired = (ReviewItemFactory(queue=queue, priority=p) for p in (0, 5, 9))
    assign_item(item=assigned, assignee=alice, actor=boss)
    hold(expired, bob, expired=True)
    assert claim_next_item(queue=queue, user=alice, exclude=[assigned.pk, pending.pk]).pk == expired.pk
    release_item(item_id=expired.pk, user=alice)
    assert claim_next_item(queue=queue, user=alice, exclude={assigned.pk, pending.pk, expired.pk}) is None


def test_blocking_then_priority_then_age_with_skips(queue, alice) -> None:
    old, new = ReviewItemFactory(queue=queue), ReviewItemFactory(queue=queue)
    urgent = ReviewItemFactory(queue=queue, priority=7)
    waiting = ReviewItemFactory(queue=queue, step=StepFactory(blocking=True))
    order = []
    for _ in range(4):
        item = claim_next_item(queue=queue, user=alice, exclude=order)
        order.append(item.pk)
        release_item(item_id=item.pk, user=alice)
    assert order == [waiting.pk, urgent.pk, old.pk, new.pk]


def test_membership_through_a_group_and_non_members(queue, alice) -> None:
    carol, boss = UserFactory(username="carol"), UserFactory(username="boss", is_staff=True)
    item = ReviewItemFactory(queue=queue)
    with pytest.raises(services.NotAMember):
        claim_next_item(queue=queue, user=carol)
    group = Group.objects.create(name="support")
    group.user_set.add(carol)
    queue.groups.add(group)
    assert claim_next_item(queue=queue, user=carol).pk == item.pk
    assert submit_review(item_id=item.pk, user=carol, verdict="approve").verdict == "approve"
    with pytest.raises(services.ItemNotFound):  # not a member, not staff: as if it did not exist
        submit_review(item_id=item.pk, user=UserFactory(username="dave"), verdict="approve")
    with pytest.raises(services.LeaseLost):  # staff see items, but hold no claim
        submit_review(item_id=item.pk, user=boss, verdict="approve")
    with pytest.raises(services.ItemNotFound):
        submit_review(item_id="not-a-number", user=alice, verdict="approve")


def test_the_locked_item_carries_its_queue_and_step_and_the_input_loads_on_access(queue, alice) -> None:
    item = ReviewItemFactory(queue=queue, step=StepFactory(input=[{"role": "user", "content": "hi"}]))
    with transaction.atomic():
        locked = services._lock_item(item.pk)
    assert locked.queue.slug == "answers" and locked.step.output == item.step.output
    assert locked.step.get_deferred_fields() == {"input"}
    assert locked.step.input == [{"role": "user", "content": "hi"}]


def test_claim_and_review_query_counts(queue, alice, django_assert_num_queries) -> None:
    item = ReviewItemFactory(queue=queue)
    services.note_membership_checked(queue, alice)
    # Inside the test's transaction: savepoint, UPDATE … RETURNING, the audit event (in the same
    # statement on PostgreSQL), release.
    with django_assert_num_queries(3 if connection.vendor == "postgresql" else 4):
        assert claim_next_item(queue=queue, user=alice).pk == item.pk
    # savepoint, lock (with membership), then the review, its audit event, the decision, step,
    # item, their audit events, the NOTIFY and the read of the agent's webhooks (one round trip
    # on PostgreSQL: rows.run; elsewhere the review first, and no NOTIFY), release
    with django_assert_num_queries(4 if connection.vendor == "postgresql" else 9):
        submit_review(item_id=item.pk, user=alice, verdict="approve")


def test_a_claim_in_a_callers_transaction_keeps_its_durability(queue, alice, on_postgres) -> None:
    ReviewItemFactory(queue=queue)
    seen: list[tuple[str, str | None]] = []
    with connection.execute_wrapper(log_with_commit_setting(seen)), transaction.atomic():
        assert claim_next_item(queue=queue, user=alice) is not None
    assert not [sql for sql, _ in seen if "synchronous_commit" in sql]
    assert {setting for _, setting in seen} <= {"on", None}


def log_with_commit_setting(seen: list[tuple[str, str | None]]):
    """An execute wrapper noting each statement with the `synchronous_commit` in force just
    after it ran, in its transaction (None off PostgreSQL)."""

    def log(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        setting = None
        if connection.vendor == "postgresql":
            with connection.connection.cursor() as raw:  # psycopg's own: not logged
                raw.execute("SHOW synchronous_commit")
                setting = raw.fetchone()[0]
        seen.append((sql, setting))
        return result

    return log


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("tier", ["pending", "assigned"])
def test_a_claim_owning_its_transaction_commits_without_waiting_for_the_disk(on_postgres, tier) -> None:
    alice = UserFactory(username="alice")
    queue = QueueFactory(slug="answers", members=[alice])
    item = ReviewItemFactory(queue=queue, assigned_to=alice if tier == "assigned" else None)
    seen: list[tuple[str, str | None]] = []
    in_transaction: list[bool] = []

    def note_transaction(execute, sql, params, many, context):
        in_transaction.append(connection.in_atomic_block)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(log_with_commit_setting(seen)), connection.execute_wrapper(note_transaction):
        assert claim_next_item(queue=queue, user=alice).pk == item.pk
    assert ReviewItem.objects.get(pk=item.pk).status == ItemStatus.CLAIMED and claim_events(item)
    *_, (last_sql, setting) = seen
    assert "INSERT INTO core_auditevent" in last_sql  # the claim's last statement, before its COMMIT
    if on_postgres and tier == "pending":
        # One statement, its own transaction (no BEGIN and COMMIT round trips), which relaxes
        # its own commit: the setting is gone with that transaction.
        assert "UPDATE review_reviewitem" in last_sql and "set_config('synchronous_commit', 'off', true)" in last_sql
        assert [sql for sql, _ in seen if "UPDATE" in sql] == [last_sql] and in_transaction[-1] is False
        assert setting == "on"
    elif on_postgres:
        assert setting == "off"
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            assert cursor.fetchone()[0] == "on"  # SET LOCAL: never the session's
    else:
        assert not [sql for sql, _ in seen if "synchronous_commit" in sql]
    seen.clear()
    with connection.execute_wrapper(log_with_commit_setting(seen)):  # resuming writes nothing: nothing to relax
        assert claim_next_item(queue=queue, user=alice).pk == item.pk
    assert {setting for _, setting in seen} <= {"on", None}


def client_for(user) -> APIClient:
    from rest_framework.authtoken.models import Token

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def test_api_review_answers_404_to_outsiders_409_on_a_lost_lease_and_201(queue, alice, bob, boss) -> None:
    ReviewItemFactory(queue=queue)
    claimed = client_for(alice).post("/api/v1/queues/answers/claim").json()
    url = f"/api/v1/items/{claimed['id']}/reviews"
    assert (
        client_for(UserFactory(username="outsider")).post(url, {"verdict": "approve"}, format="json").status_code == 404
    )
    assert (
        client_for(alice).post("/api/v1/items/999999/reviews", {"verdict": "approve"}, format="json").status_code == 404
    )
    response = client_for(boss).post(url, {"verdict": "approve"}, format="json")
    assert response.status_code == 409
    ReviewItem.objects.filter(pk=claimed["id"]).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    response = client_for(alice).post(url, {"verdict": "approve"}, format="json")
    assert response.status_code == 409 and "expired" in response.json()["detail"]
    assert not Review.objects.exists()
    assert client_for(bob).post("/api/v1/queues/answers/claim").json()["id"] == claimed["id"]
    response = client_for(bob).post(url, {"verdict": "approve", "reason": "fine"}, format="json")
    assert response.status_code == 201 and response.json()["reviewer"] == "bob"


@pytest.mark.django_db(transaction=True)
def test_claims_owning_their_transaction_take_every_tier_in_order(on_postgres) -> None:
    """As in production (no caller's transaction; on PostgreSQL the common claim is a statement
    of its own): a live claim is resumed, an assigned item comes before older pending ones, an
    expired lease is taken over, and nothing left answers None; each claim writes one event."""
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    queue = QueueFactory(slug="tiers", members=[alice, bob])
    first, second, assigned = (ReviewItemFactory(queue=queue) for _ in range(3))
    boss = UserFactory(username="boss", is_staff=True)
    assign_item(item=assigned, assignee=alice, actor=boss)

    assert claim_next_item(queue=queue, user=alice).pk == assigned.pk  # assigned first
    assert claim_next_item(queue=queue, user=alice).pk == assigned.pk  # resumed, not a new claim
    submit_review(item_id=assigned.pk, user=alice, verdict="approve")
    assert claim_next_item(queue=queue, user=alice).pk == first.pk  # the oldest pending one
    assert claim_next_item(queue=queue, user=bob).pk == second.pk
    ReviewItem.objects.filter(pk=second.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    submit_review(item_id=first.pk, user=alice, verdict="approve")
    assert claim_next_item(queue=queue, user=alice).pk == second.pk  # bob's lease ran out
    submit_review(item_id=second.pk, user=alice, verdict="reject", reason="wrong order id")
    assert claim_next_item(queue=queue, user=alice) is None
    assert claim_next_item(queue=queue, user=bob) is None
    claims = AuditEvent.objects.filter(action="item.claimed").order_by("id")
    assert [(e.object_id, e.actor_label) for e in claims] == [
        (str(assigned.pk), "alice"),
        (str(first.pk), "alice"),
        (str(second.pk), "bob"),
        (str(second.pk), "alice"),
    ]
    assert ReviewItem.objects.filter(queue=queue, status=ItemStatus.RESOLVED).count() == 3


def test_the_hot_statements_are_prepared_once_per_connection_on_postgresql(queue, alice, on_postgres) -> None:
    """rows.cursor(): on PostgreSQL the claim and the lock are parsed and planned once per
    connection (psycopg prepares them after DB_PREPARE_THRESHOLD runs), not on every call."""
    for _ in range(4):
        item = ReviewItemFactory(queue=queue)
        assert claim_next_item(queue=queue, user=alice).pk == item.pk
        submit_review(item_id=item.pk, user=alice, verdict="approve")
    with connection.cursor() as cursor:
        if not on_postgres:
            assert type(rows.cursor().cursor) is type(cursor.cursor)  # Django's own elsewhere
            return
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [statement for (statement,) in cursor.fetchall()]
    if connection.settings_dict["OPTIONS"].get("prepare_threshold") is None:  # DB_PREPARED_STATEMENTS=0
        assert prepared == []
        return
    assert [s for s in prepared if "UPDATE review_reviewitem SET status = 'claimed'" in s]
    assert [s for s in prepared if s.startswith("SELECT i.id") and "FOR UPDATE OF i" in s]
    assert not [s for s in prepared if "pg_notify" in s]  # batches: one string, bound on the client


@pytest.mark.django_db(transaction=True)
def test_a_reviews_begin_goes_to_the_server_with_its_lock(on_postgres, monkeypatch) -> None:
    """rows.pipelined(): on PostgreSQL the BEGIN that psycopg sends before a transaction's first
    statement goes in one round trip with the item's lock, not in one of its own."""
    alice = UserFactory(username="alice")
    queue = QueueFactory(slug="answers", members=[alice])
    item = ReviewItemFactory(queue=queue)
    assert claim_next_item(queue=queue, user=alice).pk == item.pk
    begins: list[bool] = []  # for each BEGIN: whether it was queued in a pipeline
    if on_postgres:
        import psycopg

        original = psycopg.Connection._exec_command

        def exec_command(self, command, *args, **kwargs):
            if bytes(command).startswith(b"BEGIN"):
                begins.append(self._pipeline is not None)
            return original(self, command, *args, **kwargs)

        monkeypatch.setattr(psycopg.Connection, "_exec_command", exec_command)
    submit_review(item_id=item.pk, user=alice, verdict="approve")
    assert ReviewItem.objects.get(pk=item.pk).status == ItemStatus.RESOLVED
    assert begins == ([True] if on_postgres else [])
