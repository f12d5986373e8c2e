from django.contrib import admin

from .models import Entitlement


@admin.register(Entitlement)
class EntitlementAdmin(admin.ModelAdmin):
    list_display = ["user", "feature", "valid_until", "source", "created_at"]
    list_filter = ["feature", "source"]
    search_fields = ["user__email"]
    raw_id_fields = ["user"]
