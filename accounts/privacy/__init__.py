"""Privacy rights across every app: deletion, export, the "what we hold" page.

accounts/ imports no product: each app registers its own step (how to delete and export
what it holds about a user) in its AppConfig.ready, with `registry.register`. See
docs/privacy.md.
"""
