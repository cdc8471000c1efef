"""pyramid_transient.jinja2: the globals on pyramid_jinja2's environments, the cache tag."""

from __future__ import annotations

from typing import Any

import pytest
from pyramid.config import Configurator
from pyramid.scripting import prepare

from pyramid_transient.cache import get_region
from pyramid_transient.jinja2 import GLOBALS
from pyramid_transient.messages import flash


def _app(settings: dict[str, Any], order: list[str]) -> Configurator:
    config = Configurator(settings={**settings, "redis.sessions.secret": "s" * 32})
    for name in order:
        config.include(name)
    config.commit()
    return config


@pytest.mark.parametrize(
    "order",
    [["pyramid_jinja2", "pyramid_transient"], ["pyramid_transient", "pyramid_jinja2"]],
    ids=["jinja2 first", "jinja2 last"],
)
def test_the_globals_are_registered_whichever_is_included_first(
    order: list[str], transient_settings: dict[str, Any], transient_manager: Any
) -> None:
    config = _app(transient_settings, order)
    environment = config.get_jinja2_environment()
    assert set(GLOBALS) <= set(environment.globals)
    env = prepare(registry=config.registry)
    request = env["request"]
    try:
        flash(request, "Saved.", "success")
        template = environment.from_string(
            "{{ render_messages(pop_messages(request)) }}|"
            "{{ cache_key('x') == request.cache_key('x') }}"
        )
        assert template.render(request=request) == (
            '<div class="msg msg-success" role="status">Saved.</div>|True'
        )
    finally:
        env["closer"]()


def test_without_pyramid_jinja2_the_include_does_nothing(
    transient_settings: dict[str, Any],
) -> None:
    from pyramid_jinja2 import IJinja2Environment

    config = _app(transient_settings, ["pyramid_transient"])
    assert config.registry.queryUtility(IJinja2Environment, name=".jinja2") is None


def test_the_cache_tag_renders_its_body_once_per_key(
    transient_settings: dict[str, Any], transient_manager: Any
) -> None:
    config = _app(transient_settings, ["pyramid_jinja2", "pyramid_transient"])
    environment = config.get_jinja2_environment()
    template = environment.from_string(
        "{% cache key %}<b>{{ counter.append(1) or counter|length }}</b>{% endcache %}"
    )
    env = prepare(registry=config.registry)
    request = env["request"]
    counter: list[int] = []
    try:
        first = template.render(request=request, key="k1", counter=counter)
        again = template.render(request=request, key="k1", counter=counter)
        other = template.render(request=request, key="k2", counter=counter)
        assert first == again == "<b>1</b>" and other == "<b>2</b>"
        assert get_region(request).get("fragment:k1") == "<b>1</b>"
        with pytest.raises(TypeError, match="needs a str key"):
            template.render(request=request, key=1, counter=counter)
    finally:
        env["closer"]()
