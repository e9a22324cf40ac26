"""Recipe: Baton inside a Django project (see apps.py); a minimal project for the tests."""
