from __future__ import annotations

import datetime as dt

import factory
from django.utils import timezone

from accounts.models import Device, Profile, User


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    password = factory.PostGenerationMethodCall("set_password", "correct-horse-battery")
    profile = factory.RelatedFactory("tests.factories.ProfileFactory", factory_related_name="user")

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):  # type: ignore[no-untyped-def]
        if create:
            obj.save()


class ProfileFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Profile
        django_get_or_create = ("user",)

    user = factory.SubFactory(UserFactory, profile=None)
    nickname = factory.Sequence(lambda n: f"nick{n}")
    birth_date = dt.date(1990, 5, 17)
    country = "DE"


class DeviceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Device

    user = factory.SubFactory(UserFactory)
    device_id = factory.Sequence(lambda n: f"device-{n:08d}")
    # A device lives in a login session; the key here names no real session row.
    session_key = factory.Sequence(lambda n: f"factory-session-{n:08d}")
    make = "Chromium 156"
    model = "desktop"
    platform = "Linux"
    client_version = "web-1"
    last_seen_at = factory.LazyFunction(timezone.now)


class ProductFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "payments.Product"

    code = factory.Sequence(lambda n: f"premium-{n}")
    name = "Premium"
    features = factory.LazyFunction(lambda: ["videochat.filters"])


class PriceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "payments.Price"

    product = factory.SubFactory(ProductFactory)
    kind = "one_off"
    amount_minor = 599
    currency = "EUR"
    duration_days = 30


class SubscriptionPriceFactory(PriceFactory):
    kind = "subscription"
    amount_minor = 499
    interval = "month"
    duration_days = None


def grant_premium(user, **kwargs):  # type: ignore[no-untyped-def]
    """A staff grant of a product with the video chat filters."""
    from payments.models import Entitlement

    return Entitlement.objects.create(user=user, product=ProductFactory(), **kwargs)


class RoomFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "messaging.Room"

    room_id = factory.Sequence(lambda n: f"!room{n:08d}:testserver")


def make_contacts(*users):  # type: ignore[no-untyped-def]
    """A CallsApp room the users share: they are contacts (who may see each other online)."""
    from messaging.models import Membership

    room = RoomFactory()
    Membership.objects.bulk_create([Membership(room=room, user=u) for u in users])
    return room
