from django.urls import path

from evals import views

app_name = "evals"

urlpatterns = [
    path("", views.datasets_page, name="datasets"),
    path("preview", views.preview, name="preview"),
    path("exports/<int:export_id>/progress", views.export_progress, name="export-progress"),
    path("<slug:name>/", views.dataset_page, name="dataset"),
    path("<slug:name>/freeze", views.freeze, name="freeze"),
    path("<slug:name>/redaction", views.redaction, name="redaction"),
    path("<slug:name>/versions/<int:number>/export", views.start_export, name="export"),
    path("<slug:name>/versions/<int:number>/progress", views.version_progress, name="version-progress"),
]
