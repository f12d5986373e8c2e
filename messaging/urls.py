"""/messaging/_matrix/...: the Matrix client-server subset (docs/protocols/callsapp.md)."""

from django.urls import path

from . import bot_api, views

app_name = "messaging"

C = "_matrix/client/v3/"

urlpatterns = [
    path("", views.app, name="app"),
    path(C + "account/whoami", views.whoami, name="whoami"),
    path(C + "devices", views.devices, name="devices"),
    path(C + "voip/turnServer", views.turn_server, name="turn_server"),
    path(C + "keys/upload", views.keys_upload, name="keys_upload"),
    path(C + "keys/query", views.keys_query, name="keys_query"),
    path(C + "keys/claim", views.keys_claim, name="keys_claim"),
    path(C + "keys/device_signing/upload", views.signing_keys_upload, name="signing_upload"),
    path(C + "keys/signatures/upload", views.signatures_upload, name="signatures_upload"),
    path(
        C + "sendToDevice/<str:event_type>/<str:txn_id>",
        views.send_to_device,
        name="send_to_device",
    ),
    path(C + "createRoom", views.create_room, name="create_room"),
    path(C + "joined_rooms", views.joined_rooms, name="joined_rooms"),
    path(C + "rooms/<str:room_id>/state", views.room_state, name="room_state"),
    path(C + "rooms/<str:room_id>/joined_members", views.joined_members, name="joined_members"),
    path(C + "rooms/<str:room_id>/invite", views.invite, name="invite"),
    path(C + "rooms/<str:room_id>/kick", views.kick, name="kick"),
    path(C + "rooms/<str:room_id>/leave", views.leave, name="leave"),
    path(C + "rooms/<str:room_id>/state/m.room.name/", views.room_name, name="room_name"),
    path(
        C + "rooms/<str:room_id>/state/m.room.power_levels/",
        views.power_levels,
        name="power_levels",
    ),
    path(
        C + "rooms/<str:room_id>/send/<str:event_type>/<str:txn_id>",
        views.send_event,
        name="send",
    ),
    path(
        C + "rooms/<str:room_id>/redact/<str:event_id>/<str:txn_id>",
        views.redact,
        name="redact",
    ),
    path(
        C + "rooms/<str:room_id>/receipt/m.read/<str:event_id>",
        views.receipt,
        name="receipt",
    ),
    path(C + "user_directory/search", views.directory_search, name="directory_search"),
    path(
        C + "user/<str:user_id>/account_data/m.ignored_user_list",
        views.ignored_users,
        name="ignored_users",
    ),
    path(C + "presence/<str:user_id>/status", views.presence_status, name="presence"),
    path("api/settings", views.privacy_settings, name="settings"),
    path("api/communities", views.communities, name="communities"),
    path("api/communities/join", views.community_join_by_name, name="community_join_by_name"),
    path("api/communities/<str:community_id>", views.community, name="community"),
    path("api/communities/<str:community_id>/join", views.community_join, name="community_join"),
    path("api/communities/<str:community_id>/leave", views.community_leave, name="community_leave"),
    path("api/communities/<str:community_id>/posts", views.community_posts, name="community_posts"),
    path(
        "api/communities/<str:community_id>/posts/<int:post_id>",
        views.community_post,
        name="community_post",
    ),
    path(
        "api/communities/<str:community_id>/posts/<int:post_id>/like",
        views.community_like,
        name="community_like",
    ),
    path("api/communities/<str:community_id>/mute", views.community_mute, name="community_mute"),
    path(
        "api/communities/<str:community_id>/access",
        views.community_access,
        name="community_access",
    ),
    path(
        "api/communities/<str:community_id>/members",
        views.community_members,
        name="community_members",
    ),
    path(
        "api/communities/<str:community_id>/members/<str:user_id>",
        views.community_member,
        name="community_member",
    ),
    path("api/bots", views.bots, name="bots"),
    path("api/bots/<int:bot_id>", views.bot, name="bot"),
    path("api/bots/<int:bot_id>/token", views.bot_token, name="bot_token"),
    path("api/bot-chats", views.bot_chats, name="bot_chats"),
    path("api/bot-chats/<str:username>", views.bot_chat, name="bot_chat"),
    path(
        "api/bot-chats/<str:username>/messages",
        views.bot_chat_messages,
        name="bot_chat_messages",
    ),
    path("api/bot-chats/<str:username>/block", views.bot_chat_block, name="bot_chat_block"),
    # The bots' own API (token in the Authorization header; Telegram's shapes).
    path("bot-api/<str:method>", bot_api.dispatch, name="bot_api"),
    path("api/rooms/<str:room_id>/undelivered", views.undelivered, name="undelivered"),
    path("_matrix/media/v3/upload", views.media_upload, name="media_upload"),
    path(
        "_matrix/client/v1/media/download/<str:server_name>/<str:media_id>",
        views.media_download,
        name="media_download",
    ),
]
