import sys

from pyramid.paster import bootstrap, setup_logging

from ..models import Base, Page


def main(argv=sys.argv):
    config_uri = argv[1]
    setup_logging(config_uri)
    # bootstrap, not a bare sessionmaker: the app's includeme registers the hooks, so the
    # script's commits move the cache keys too.
    with bootstrap(config_uri) as env:
        request = env["request"]
        Base.metadata.create_all(request.dbsession.get_bind())
        with request.tm:
            request.dbsession.add(Page(id=1, title="Welcome"))


if __name__ == "__main__":
    main()
