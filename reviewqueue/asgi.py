"""
ASGI config for reviewqueue project.

It exposes the ASGI callable as a module-level variable named ``application``.

For more information on this file, see
https://docs.djangoproject.com/en/5.2/howto/deployment/asgi/
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reviewqueue.settings")
# On PostgreSQL, a connection pool rather than persistent per-thread connections (settings.py):
# under ASGI each request's sync code runs in a thread of its own.
os.environ.setdefault("DB_POOL", "1")

application = get_asgi_application()
