from django.urls import path

from reviewqueue.hooks import views

urlpatterns = [
    path("", views.webhook_list, name="webhooks-page"),
    path("<int:webhook_id>/", views.delivery_log, name="webhook-deliveries-page"),
    path("<int:webhook_id>/test", views.send_test, name="webhook-send-test"),
]
