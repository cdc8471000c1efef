from pyramid.config import Configurator

from pyramid_transient.celery import configure as configure_celery

from .tasks import celery_app


def main(global_config, **settings):
    """This function returns a Pyramid WSGI application."""
    with Configurator(settings=settings) as config:
        config.include("pyramid_jinja2")
        config.include(".models")
        config.include(".routes")
        # No sessions in this app? Include only what it uses instead:
        # config.include("pyramid_transient.cache") (see docs/install.rst).
        config.include("pyramid_transient")
        configure_celery(celery_app, config.registry)
        config.scan(".views")
    return config.make_wsgi_app()
