"""Communities and public accounts (docs/protocols/callsapp.md, "Communities and public
accounts"): plain posts, not end-to-end encrypted, kept until their author (or an admin, as
moderation) deletes them. Through the HTTP API as the page uses it."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async

from accounts.privacy import registry
from messaging import communities
from messaging.keys import callsapp_user_group
from messaging.models import Community, CommunityMember, CommunityPost, PostLike
from realtime.events import capture_events
from tests.factories import UserFactory
from tests.messaging.conftest import amember, sync_socket
from tests.messaging.test_api import UNDER_10, Browser

pytestmark = pytest.mark.django_db

API = "/messaging/api/communities"


def create(b: Browser, name: str, *, kind: str = "community", access: str = "open") -> str:
    made = b.ok(
        "POST", API, {"name": name, "description": f"about {name}", "kind": kind, "access": access}
    )
    assert made["role"] == "admin"
    return str(made["community_id"])


def post(b: Browser, cid: str, text: str) -> int:
    return int(b.ok("POST", f"{API}/{cid}/posts", {"text": text})["post_id"])


def texts(b: Browser, cid: str) -> list[str]:
    return [p["text"] for p in b.ok("GET", f"{API}/{cid}")["posts"]]


def refused(b: Browser, method: str, path: str, body: Any = None, status: int = 403) -> str:
    resp = b.call(method, path, body)
    assert resp.status_code == status, resp.content
    answer = resp.json()
    assert answer["errcode"].startswith("M_") and answer["error"]
    return str(answer["error"])


def test_an_open_community_is_listed_joined_at_once_and_read():
    ida, oz = Browser(), Browser()
    cid = create(ida, "Gardeners")
    post(ida, cid, "Welcome, everyone")

    listed = oz.ok("GET", API)
    assert [c["name"] for c in listed["open"]] == ["Gardeners"]
    assert listed["mine"] == []
    joined = oz.ok("POST", f"{API}/{cid}/join")
    assert joined["role"] == "member"
    assert texts(oz, cid) == ["Welcome, everyone"]
    assert oz.ok("GET", API)["mine"][0]["community_id"] == cid
    post(oz, cid, "Hello from Oz")
    assert texts(ida, cid) == ["Welcome, everyone", "Hello from Oz"]


def test_an_approval_community_waits_for_an_admin_and_is_not_listed():
    ida, oz, eve = Browser(), Browser(), Browser()
    cid = create(ida, "Inner circle", access="approval")
    post(ida, cid, "members only")
    assert oz.ok("GET", API)["open"] == []

    # Joined by its exact name (any case): a request, not a membership.
    asked = oz.ok("POST", f"{API}/join", {"name": "inner circle"})
    assert (asked["community_id"], asked["role"]) == (cid, "pending")
    # A non-member, pending or not, reads nothing and cannot post.
    for who in (oz, eve):
        refused(who, "GET", f"{API}/{cid}", status=404)
        refused(who, "POST", f"{API}/{cid}/posts", {"text": "let me in"}, status=404)
    assert not CommunityPost.objects.filter(text="let me in").exists()

    # Only admins see and answer requests.
    refused(eve, "GET", f"{API}/{cid}/members", status=404)
    requests = ida.ok("GET", f"{API}/{cid}/members")["requests"]
    assert [r["user_id"] for r in requests] == [oz.mxid]
    ida.ok("POST", f"{API}/{cid}/members/{oz.mxid}", {"action": "approve"})
    assert texts(oz, cid) == ["members only"]

    eve.ok("POST", f"{API}/{cid}/join")  # by link (its id)
    ida.ok("POST", f"{API}/{cid}/members/{eve.mxid}", {"action": "refuse"})
    assert not CommunityMember.objects.filter(user=eve.user).exists()
    refused(eve, "GET", f"{API}/{cid}", status=404)


def test_a_missing_name_is_a_clear_not_found():
    oz = Browser()
    assert "no community" in refused(oz, "POST", f"{API}/join", {"name": "Nope"}, status=404)


def test_names_are_unique_and_posts_have_a_length_limit():
    ida = Browser()
    cid = create(ida, "Chess")
    assert "taken" in refused(
        ida, "POST", API, {"name": "chess", "description": "", "kind": "community"}, status=400
    )
    resp = ida.call("POST", f"{API}/{cid}/posts", {"text": "x" * 4001})
    assert resp.status_code == 400 and resp.json()["errcode"] == "M_BAD_JSON"
    assert "text" in resp.json()["error"]


def test_only_admins_post_in_a_public_account_and_everyone_else_subscribes():
    ida, oz = Browser(), Browser()
    cid = create(ida, "Daily news", kind="public")
    assert oz.ok("POST", f"{API}/{cid}/join")["role"] == "member"
    assert "admins" in refused(oz, "POST", f"{API}/{cid}/posts", {"text": "me too"})
    post(ida, cid, "Today: sunshine")
    assert texts(oz, cid) == ["Today: sunshine"]
    assert oz.ok("GET", f"{API}/{cid}")["can_post"] is False


def test_an_author_deletes_their_post_and_an_admin_deletes_any_other_does_not():
    ida, oz, eve = Browser(), Browser(), Browser()
    cid = create(ida, "Makers")
    for b in (oz, eve):
        b.ok("POST", f"{API}/{cid}/join")
    first = post(oz, cid, "first")
    second = post(oz, cid, "second")

    refused(eve, "DELETE", f"{API}/{cid}/posts/{first}")
    oz.ok("DELETE", f"{API}/{cid}/posts/{first}")  # the author
    ida.ok("DELETE", f"{API}/{cid}/posts/{second}")  # moderation
    assert texts(eve, cid) == []
    assert not CommunityPost.objects.exists()  # a real delete


def test_a_like_counts_once_and_can_be_taken_back():
    ida, oz = Browser(), Browser()
    cid = create(ida, "Cats")
    oz.ok("POST", f"{API}/{cid}/join")
    pid = post(oz, cid, "a cat")
    like = f"{API}/{cid}/posts/{pid}/like"
    assert ida.ok("PUT", like) == {"likes": 1, "liked": True}
    assert ida.ok("PUT", like) == {"likes": 1, "liked": True}
    assert oz.ok("PUT", like) == {"likes": 2, "liked": True}
    (seen,) = oz.ok("GET", f"{API}/{cid}")["posts"]
    assert (seen["likes"], seen["liked"]) == (2, True)
    assert ida.ok("DELETE", like) == {"likes": 1, "liked": False}
    assert PostLike.objects.count() == 1
    # Liking needs membership.
    refused(Browser(), "PUT", like)


def test_a_new_post_reaches_members_live_unless_they_muted_it(django_capture_on_commit_callbacks):
    ida, oz, eve = Browser(), Browser(), Browser()
    cid = create(ida, "Runners")
    for b in (oz, eve):
        b.ok("POST", f"{API}/{cid}/join")
    assert eve.ok("PUT", f"{API}/{cid}/mute", {"muted": True})["muted"] is True

    with capture_events() as seen, django_capture_on_commit_callbacks(execute=True):
        pid = post(ida, cid, "Run at six")
    pushed = dict(seen)
    assert set(pushed) == {callsapp_user_group(ida.user.pk), callsapp_user_group(oz.user.pk)}
    frame = pushed[callsapp_user_group(oz.user.pk)]["frame"]
    assert frame["type"] == "community.post" and frame["community_id"] == cid
    assert (frame["post"]["post_id"], frame["post"]["text"]) == (pid, "Run at six")
    # Muted, she still reads everything when she opens it.
    assert texts(eve, cid) == ["Run at six"]

    with capture_events() as seen, django_capture_on_commit_callbacks(execute=True):
        ida.ok("PUT", f"{API}/{cid}/posts/{pid}/like")
        ida.ok("DELETE", f"{API}/{cid}/posts/{pid}")
    frames = [p["frame"] for g, p in seen if g == callsapp_user_group(oz.user.pk)]
    assert [f["type"] for f in frames] == ["community.likes", "community.post_deleted"]
    assert not any(g == callsapp_user_group(eve.user.pk) for g, _ in seen)


def test_admins_set_the_access_remove_members_and_make_admins():
    ida, oz, eve = Browser(), Browser(), Browser()
    cid = create(ida, "Choir")
    for b in (oz, eve):
        b.ok("POST", f"{API}/{cid}/join")
    refused(oz, "PUT", f"{API}/{cid}/access", {"access": "approval"})
    assert ida.ok("PUT", f"{API}/{cid}/access", {"access": "approval"})["access"] == "approval"
    assert Browser().ok("GET", API)["open"] == []

    ida.ok("POST", f"{API}/{cid}/members/{oz.mxid}", {"action": "make_admin"})
    # The new admin moderates: removes Eve, who then reads nothing.
    oz.ok("POST", f"{API}/{cid}/members/{eve.mxid}", {"action": "remove"})
    refused(eve, "GET", f"{API}/{cid}", status=404)
    roles = {m["user_id"]: m["role"] for m in ida.ok("GET", f"{API}/{cid}/members")["members"]}
    assert roles == {ida.mxid: "admin", oz.mxid: "admin"}


def test_the_last_admin_leaving_hands_over_to_the_longest_standing_member():
    ida, oz, eve = Browser(), Browser(), Browser()
    cid = create(ida, "Book club")
    oz.ok("POST", f"{API}/{cid}/join")
    eve.ok("POST", f"{API}/{cid}/join")
    ida.ok("POST", f"{API}/{cid}/leave")
    assert CommunityMember.objects.get(user=oz.user).is_admin
    assert not CommunityMember.objects.get(user=eve.user).is_admin
    oz.ok("POST", f"{API}/{cid}/leave")
    eve.ok("POST", f"{API}/{cid}/leave")
    assert not Community.objects.exists()  # nobody left


def test_an_account_under_the_age_rule_is_refused():
    young = Browser(**UNDER_10)
    assert young.call("GET", API).status_code == 403


def test_deleting_an_account_deletes_its_posts_likes_and_memberships_and_hands_admin_over():
    ida, oz, eve = Browser(), Browser(), Browser()
    shared = create(ida, "Hikers")
    oz.ok("POST", f"{API}/{shared}/join")
    eve.ok("POST", f"{API}/{shared}/join")
    kept = post(oz, shared, "Oz's post")
    gone = post(ida, shared, "Ida's post")
    ida.ok("PUT", f"{API}/{shared}/posts/{kept}/like")
    oz.ok("PUT", f"{API}/{shared}/posts/{gone}/like")
    alone = create(ida, "Just me")

    step = registry.step_of("messaging")
    assert step is not None
    step.delete(user_id=ida.user.pk)

    assert not CommunityPost.objects.filter(author=ida.user).exists()
    assert not PostLike.objects.filter(user=ida.user).exists()
    assert not CommunityMember.objects.filter(user=ida.user).exists()
    assert texts(oz, shared) == ["Oz's post"]
    assert oz.ok("GET", f"{API}/{shared}")["posts"][0]["likes"] == 0
    # The longest-standing member is the admin now; the community nobody is left in is gone.
    assert CommunityMember.objects.get(user=oz.user).is_admin
    assert not CommunityMember.objects.get(user=eve.user).is_admin
    assert not Community.objects.filter(community_id=alone).exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_the_push_reaches_the_members_callsapp_socket():
    ida, oz = await amember(), await amember()
    c = await sync_to_async(communities.community_create)(
        creator=ida.user, name="Live", description="", kind="community", access="open"
    )
    await sync_to_async(communities.community_join)(user=oz.user, community_id=c.community_id)
    comm = await sync_socket(oz)
    try:
        await sync_to_async(communities.post_create)(
            author=ida.user, community_id=c.community_id, text="Is this live?"
        )
        frame = await comm.receive_json_from(timeout=5)
        assert frame["type"] == "community.post"
        assert (frame["community_id"], frame["post"]["text"]) == (c.community_id, "Is this live?")
    finally:
        await comm.disconnect()


def test_staff_list_communities_and_posts_and_delete_a_post(client):
    ida = Browser()
    cid = create(ida, "Moderated")
    pid = post(ida, cid, "spam spam spam")
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    assert "Moderated" in client.get("/admin/messaging/community/").content.decode()
    assert "spam spam spam" in client.get("/admin/messaging/communitypost/").content.decode()
    assert client.get(f"/admin/messaging/communitypost/{pid}/change/").status_code == 200
    resp = client.post(f"/admin/messaging/communitypost/{pid}/delete/", {"post": "yes"})
    assert resp.status_code == 302
    assert not CommunityPost.objects.exists()
    # Read and delete only: a change goes through the services.
    resp = client.post(f"/admin/messaging/community/{Community.objects.get().pk}/change/", {})
    assert resp.status_code == 403


def test_a_post_flood_is_refused_and_the_community_stays_usable(settings):
    """Posting is rate-limited per author: past the bucket a post is refused (429, nothing
    stored), the others still post."""
    settings.MESSAGING_POST_CAPACITY = 3
    settings.MESSAGING_POST_PER_SECOND = 0.001
    ida, oz = Browser(), Browser()
    cid = create(ida, "Busy")
    oz.ok("POST", f"{API}/{cid}/join")
    for i in range(3):
        post(oz, cid, f"spam {i}")
    refused(oz, "POST", f"{API}/{cid}/posts", {"text": "spam 3"}, status=429)
    post(ida, cid, "still here")
    assert texts(ida, cid) == ["spam 0", "spam 1", "spam 2", "still here"]
