"""Every write of CallsApp's communities and public accounts. Unlike chats these are plain
text on the server, not end-to-end encrypted: a post is kept until its author deletes it, or
an admin does as moderation (a real delete, with its likes).

A community: its members post. A public account: only its admins post; the others subscribe
and read. Access is "open" (listed, joined at once) or "approval" (unlisted, found by exact
name or link, an admin approves each request). New posts, deletions and like counts are
pushed live to the members who have not muted it; opening a community reads it all again."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import User
from realtime.events import send_on_commit

from . import selectors
from .errors import forbidden, invalid, not_found
from .events import CommunityPush
from .ids import user_pk
from .keys import callsapp_user_group, post_rate_key
from .models import Community, CommunityMember, CommunityPost, PostLike
from .ratelimits import rate_checked
from .schemas import CommunityLikes, CommunityPostDeleted, CommunityPosted, PostJson

Json = dict[str, Any]


def _push(c: Community, frame: CommunityPosted | CommunityPostDeleted | CommunityLikes) -> None:
    # One send per member group: fine for the sizes this serves; a big public account would
    # want a per-community group joined while the page shows it.
    payload = frame.model_dump(mode="json")
    for uid in selectors.community_push_targets(c):
        send_on_commit(callsapp_user_group(uid), CommunityPush(frame=payload))


def _joined(community_id: str, user_id: int) -> CommunityMember:
    """The user's membership; a non-member of an approval community is told it does not
    exist, of an open one that they must join first."""
    c = selectors.community_readable(community_id=community_id, user_id=user_id)
    m = selectors.community_membership(community_id, user_id)
    if m is None:
        raise forbidden(f"join {c.name} first")
    return m


def _admin(community_id: str, user_id: int) -> CommunityMember:
    m = _joined(community_id, user_id)
    if not m.is_admin:
        raise forbidden(f"only the admins of {m.community.name} may do that")
    return m


def community_create(
    *, creator: User, name: str, description: str, kind: str, access: str
) -> Community:
    name = name.strip()
    if not name:
        raise invalid("a community needs a name")
    if Community.objects.filter(name__iexact=name).exists():
        raise invalid(f'the name "{name}" is taken')
    try:
        with transaction.atomic():
            c = Community.objects.create(
                community_id=secrets.token_urlsafe(12),
                name=name,
                description=description.strip(),
                kind=kind,
                access=access,
            )
            CommunityMember.objects.create(community=c, user=creator, is_admin=True)
    except IntegrityError:  # the same name, created at the same moment
        raise invalid(f'the name "{name}" is taken') from None
    return c


def community_join(*, user: User, community_id: str) -> Community:
    """Open: a member at once. By approval: a request its admins answer. Again: no change."""
    with transaction.atomic():
        c = Community.objects.select_for_update().filter(community_id=community_id).first()
        if c is None:
            raise not_found("no such community")
        pending = c.access == Community.Access.APPROVAL
        CommunityMember.objects.get_or_create(community=c, user=user, defaults={"pending": pending})
    return c


def community_join_by_name(*, user: User, name: str) -> Community:
    c = Community.objects.filter(name__iexact=name.strip()).first()
    if c is None:
        raise not_found(f'no community is named exactly "{name.strip()}"')
    return community_join(user=user, community_id=c.community_id)


def community_leave(*, user: User, community_id: str) -> None:
    with transaction.atomic():
        m = CommunityMember.objects.filter(community__community_id=community_id, user=user).first()
        if m is None:
            raise not_found("you are not in that community")
        m.delete()
        admins_ensure([m.community_id])


def admins_ensure(community_pks: Iterable[int]) -> None:
    """A community never stays without an admin: its longest-standing member becomes one;
    one with no member left is deleted (its pending requests with it)."""
    for c in Community.objects.select_for_update().filter(pk__in=list(community_pks)):
        joined = c.members.filter(pending=False)
        if not joined.exists():
            c.delete()
        elif not joined.filter(is_admin=True).exists():
            first = joined.order_by("joined_at", "pk").first()
            assert first is not None
            first.is_admin = True
            first.save(update_fields=["is_admin"])


def post_create(*, author: User, community_id: str, text: str) -> Json:
    # Posts are pushed to every member: a flood would reach them all.
    rate_checked(
        post_rate_key(author.pk),
        capacity=settings.MESSAGING_POST_CAPACITY,
        per_second=settings.MESSAGING_POST_PER_SECOND,
        detail="too many posts, slow down",
    )
    with transaction.atomic():
        m = _joined(community_id, author.pk)
        c = m.community
        if c.kind == Community.Kind.PUBLIC and not m.is_admin:
            raise forbidden(f"{c.name} is a public account: only its admins post")
        post = CommunityPost.objects.create(community=c, author=author, text=text)
        data = selectors.post_json(post, likes=0, liked=False)
        _push(c, CommunityPosted(community_id=c.community_id, post=PostJson(**data)))
    return data


def post_delete(*, actor: User, community_id: str, post_id: int) -> None:
    """The author deletes their post; an admin deletes any (moderation). A real delete."""
    with transaction.atomic():
        m = _joined(community_id, actor.pk)
        post = CommunityPost.objects.filter(pk=post_id, community=m.community).first()
        if post is None:
            raise not_found("no such post in this community")
        if post.author_id != actor.pk and not m.is_admin:
            raise forbidden("only its author or an admin may delete a post")
        post.delete()
        _push(m.community, CommunityPostDeleted(community_id=community_id, post_id=post_id))


def post_like_set(*, user: User, community_id: str, post_id: int, liked: bool) -> Json:
    """One like per member and post; liking twice changes nothing."""
    with transaction.atomic():
        m = _joined(community_id, user.pk)
        post = CommunityPost.objects.filter(pk=post_id, community=m.community).first()
        if post is None:
            raise not_found("no such post in this community")
        if liked:
            _, changed = PostLike.objects.get_or_create(post=post, user=user)
        else:
            changed = bool(PostLike.objects.filter(post=post, user=user).delete()[0])
        likes = post.likes.count()
        if changed:
            _push(
                m.community,
                CommunityLikes(community_id=community_id, post_id=post_id, likes=likes),
            )
    return {"likes": likes, "liked": liked}


def community_mute_set(*, user: User, community_id: str, muted: bool) -> Community:
    """A muted community's new posts are not pushed to the member (still read on opening)."""
    with transaction.atomic():
        m = _joined(community_id, user.pk)
        m.muted = muted
        m.save(update_fields=["muted"])
    return m.community


def community_access_set(*, actor: User, community_id: str, access: str) -> Community:
    with transaction.atomic():
        c = _admin(community_id, actor.pk).community
        c.access = access
        c.save(update_fields=["access"])
        if access == Community.Access.OPEN:  # open now: whoever asked is in
            c.members.filter(pending=True).update(pending=False, joined_at=timezone.now())
    return c


def community_member_act(*, actor: User, community_id: str, user_mxid: str, action: str) -> None:
    """An admin approves or refuses a request, removes a member, or makes one an admin."""
    with transaction.atomic():
        c = _admin(community_id, actor.pk).community
        target = CommunityMember.objects.filter(community=c, user_id=user_pk(user_mxid) or 0)
        m = target.first()
        wanted_pending = action in ("approve", "refuse")
        if m is None or m.pending != wanted_pending:
            what = "a request" if wanted_pending else "a member"
            raise not_found(f"{user_mxid} has no {what} in {c.name}")
        if action == "approve":
            # Seniority counts from the approval (it decides a later admin handover).
            target.update(pending=False, joined_at=timezone.now())
        elif action == "make_admin":
            target.update(is_admin=True)
        elif m.user_id == actor.pk:
            raise invalid("to leave, use leave")
        else:  # refuse, remove
            m.delete()


def user_communities_delete(*, user_id: int) -> None:
    """Account deletion: their posts (with their likes), likes and memberships go; where they
    were the last admin, the longest-standing member takes over, or the community goes."""
    with transaction.atomic():
        mine = CommunityMember.objects.filter(user_id=user_id)
        pks = set(mine.values_list("community_id", flat=True))
        PostLike.objects.filter(user_id=user_id).delete()
        CommunityPost.objects.filter(author_id=user_id).delete()
        mine.delete()
        admins_ensure(pks)
