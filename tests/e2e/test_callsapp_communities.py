"""CallsApp's communities in two real browsers: plain posts (not end-to-end encrypted), live
to the members' open pages."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from messaging.models import CommunityPost
from tests.e2e.test_callsapp import VAR, open_callsapp
from tests.factories import UserFactory

pytestmark = pytest.mark.e2e

NOT_E2E = "Not end-to-end encrypted: posts are kept on the server until their author deletes them"


def open_communities(page: Page) -> None:
    page.get_by_test_id("open-communities").click()
    expect(page.get_by_test_id("communities-panel")).to_be_visible()


def test_a_post_liked_live_and_deleted_by_its_author(live_asgi, new_context):
    ida = UserFactory(profile__nickname="Ida")
    oz = UserFactory(profile__nickname="Oz")
    i = open_callsapp(new_context(viewport={"width": 1280, "height": 860}), live_asgi, ida)
    o = open_callsapp(new_context(viewport={"width": 390, "height": 844}), live_asgi, oz)

    # Ida creates an open community.
    open_communities(i)
    i.get_by_test_id("new-community").click()
    form = i.get_by_test_id("new-community-form")
    form.locator("[name=name]").fill("Night owls")
    form.locator("[name=description]").fill("For those awake at 3 am")
    form.locator("[name=kind]").select_option("community")
    form.locator("[name=access]").select_option("open")
    form.locator("button[type=submit]").click()
    view = i.get_by_test_id("community-view")
    expect(view.get_by_test_id("community-name")).to_have_text("Night owls")
    expect(view.get_by_test_id("not-e2e")).to_have_text(NOT_E2E)

    # Oz, on a phone, finds it among the open ones and joins.
    open_communities(o)
    o.screenshot(path=str(VAR / "e2e-callsapp-communities-phone.png"))
    listed = o.get_by_test_id("open-communities-list").locator("li", has_text="Night owls")
    listed.get_by_test_id("join").click()
    oz_view = o.get_by_test_id("community-view")
    expect(oz_view.get_by_test_id("community-name")).to_have_text("Night owls")
    expect(oz_view.get_by_test_id("not-e2e")).to_be_visible()
    oz_view.get_by_test_id("post-input").fill("Who else is up?")
    oz_view.get_by_test_id("post-send").click()
    oz_post = oz_view.get_by_test_id("post").filter(has_text="Who else is up?")
    expect(oz_post).to_be_visible()

    # Ida sees it arrive live, and likes it; Oz sees the count.
    ida_post = view.get_by_test_id("post").filter(has_text="Who else is up?")
    expect(ida_post).to_be_visible(timeout=15000)
    expect(ida_post).to_contain_text("Oz")
    ida_post.get_by_test_id("like").click()
    expect(ida_post.get_by_test_id("like-count")).to_have_text("1")
    expect(ida_post.get_by_test_id("like")).to_have_attribute("aria-pressed", "true")
    expect(oz_post.get_by_test_id("like-count")).to_have_text("1", timeout=15000)
    i.screenshot(path=str(VAR / "e2e-callsapp-community.png"))
    o.screenshot(path=str(VAR / "e2e-callsapp-community-phone.png"))

    # Ida (admin) could delete it too, but it is Oz's to delete: gone for Ida, and from the
    # server.
    expect(ida_post.get_by_test_id("post-delete")).to_be_visible()
    o.once("dialog", lambda dialog: dialog.accept())
    oz_post.get_by_test_id("post-delete").click()
    expect(oz_post).to_have_count(0)
    expect(ida_post).to_have_count(0, timeout=15000)
    assert not CommunityPost.objects.exists()


def test_an_approval_community_admits_whom_its_admin_approves(live_asgi, new_context):
    ida = UserFactory(profile__nickname="Ida")
    oz = UserFactory(profile__nickname="Oz")
    i = open_callsapp(new_context(), live_asgi, ida)
    o = open_callsapp(new_context(), live_asgi, oz)
    open_communities(i)
    i.get_by_test_id("new-community").click()
    form = i.get_by_test_id("new-community-form")
    form.locator("[name=name]").fill("Quiet room")
    form.locator("[name=access]").select_option("approval")
    form.locator("button[type=submit]").click()
    view = i.get_by_test_id("community-view")
    view.get_by_test_id("post-input").fill("For members only")
    view.get_by_test_id("post-send").click()
    expect(view.get_by_test_id("post")).to_have_count(1)

    # Not listed; Oz asks by its exact name and waits, reading nothing.
    open_communities(o)
    expect(o.get_by_test_id("open-communities-list")).not_to_contain_text("Quiet room")
    o.fill("#ca-join-community", "quiet room")
    o.get_by_test_id("join-community-form").locator("button[type=submit]").click()
    oz_view = o.get_by_test_id("community-view")
    expect(oz_view.get_by_test_id("community-pending")).to_be_visible()
    expect(oz_view.get_by_test_id("post")).to_have_count(0)

    # Ida approves him in the admin panel, then makes him an admin.
    view.get_by_test_id("community-admin").click()
    request = view.get_by_test_id("community-requests").locator("li", has_text="Oz")
    request.get_by_test_id("member-approve").click()
    member = view.get_by_test_id("community-members").locator("li", has_text="Oz")
    member.get_by_test_id("member-make_admin").click()
    expect(member).to_contain_text("admin")

    open_communities(o)
    o.get_by_test_id("my-communities").get_by_test_id("community-open").click()
    expect(oz_view.get_by_test_id("post").filter(has_text="For members only")).to_be_visible()
    expect(oz_view.get_by_test_id("community-admin")).to_be_visible()
