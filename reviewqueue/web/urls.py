from django.urls import path

from reviewqueue.web import attachments, history, home, review

app_name = "web"

urlpatterns = [
    path("", home.home, name="home"),
    path("review/<slug:slug>/", review.review_queue, name="review"),
    path("review/<slug:slug>/skipped/reset", review.reset_skipped, name="reset-skipped"),
    path("review/<slug:slug>/items/<int:item_id>/verdict", review.verdict, name="verdict"),
    path("review/<slug:slug>/items/<int:item_id>/heartbeat", review.heartbeat, name="heartbeat"),
    path("review/<slug:slug>/items/<int:item_id>/diff", review.correction_diff, name="diff"),
    path("history/", history.history, name="history"),
    path("history/<int:review_id>/", history.amend, name="amend"),
    path("attachments/<int:attachment_id>/", attachments.attachment, name="attachment"),
    path(
        "attachments/<int:attachment_id>/thumbnail/",
        attachments.attachment,
        {"variant": "thumbnail"},
        name="attachment-thumbnail",
    ),
]
