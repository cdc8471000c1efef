import os

import pytest
from pyramid.paster import get_appsettings

from pyramid_transient.testing import app_test_settings

from myproject import main
from myproject.models import Base, Page

pytest_plugins = ["pyramid_transient.testing"]


def pytest_addoption(parser):
    parser.addoption("--ini", action="store", metavar="INI_FILE")


@pytest.fixture(scope="session")
def ini_file(request):
    # potentially grab this path from a pytest option
    return os.path.abspath(request.config.option.ini or "testing.ini")


@pytest.fixture(scope="session")
def app_settings(ini_file, transient_redis_url):
    # the app's testing.ini, its Redis keys pointed at the server the plugin started
    return app_test_settings(get_appsettings(ini_file), transient_redis_url)


@pytest.fixture(scope="session")
def app(app_settings):
    app = main({}, **app_settings)
    Base.metadata.create_all(app.registry["dbsession_factory"].kw["bind"])
    return app


@pytest.fixture
def welcome(app, transient_manager):
    # transient_manager flushes the test databases before each test; the SQL rows are ours
    factory = app.registry["dbsession_factory"]
    with factory() as session, session.begin():
        session.merge(Page(id=1, title="Welcome"))
