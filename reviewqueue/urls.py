from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from reviewqueue.api.errors import not_found
from reviewqueue.api.otlp import otlp_traces

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/v1/", include("reviewqueue.api.urls")),
    re_path(r"^api/v1/", not_found),  # after every API path: JSON, not the site's HTML page
    path("v1/traces", otlp_traces, name="otlp-traces"),
    path("webhooks/", include("reviewqueue.hooks.urls")),
    path("datasets/", include("evals.urls")),
    path("", include("reviewqueue.web.urls")),
]

if settings.DEBUG:
    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
