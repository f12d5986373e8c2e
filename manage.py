#!/usr/bin/env python
import os
import sys

if __name__ == "__main__":
    # Unset means production (which refuses to start without its secrets), never DEBUG:
    # `make` and config/run_local.py choose config.settings.local explicitly.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
