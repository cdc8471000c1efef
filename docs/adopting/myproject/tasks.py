from celery import Celery

from pyramid_transient.celery import setup_worker
from pyramid_transient.safe import get_safe

celery_app = Celery("myproject")
setup_worker(celery_app)  # celery -A myproject.tasks worker --ini development.ini

renamed = get_safe(__name__)  # connects nothing: the worker's app is found at first use


@celery_app.task
def page_renamed(page_id, title):
    renamed[str(page_id)] = title
