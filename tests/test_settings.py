"""Settings: every key parsed through the table, every bad value named at startup."""

from __future__ import annotations

import pytest
from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationError as PyramidConfigurationError

from pyramid_transient import ConfigurationError, RedisManager, parse_settings
from pyramid_transient.settings import SETTINGS, TransientSettings


def error_for(settings: dict[str, str]) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as info:
        parse_settings(settings)
    return info.value


def test_defaults_without_any_setting() -> None:
    parsed = parse_settings({})
    assert parsed == TransientSettings()
    assert parsed.url == "memory://"
    assert dict(parsed.databases) == {"default": 0}
    assert parsed.mode == "memory"
    assert parsed.socket_timeout < 1 and parsed.socket_connect_timeout < 1


def test_other_keys_are_ignored() -> None:
    assert (
        parse_settings({"pyramid.includes": "x", "redis.sessions.secret": "s"})
        == TransientSettings()
    )


def test_database_names_map_to_numbers() -> None:
    parsed = parse_settings({"transient.db.sessions": "1", "transient.db.celery": " 3 "})
    assert dict(parsed.databases) == {"default": 0, "sessions": 1, "celery": 3}


@pytest.mark.parametrize("value", ["x", "16", "-1", "1.5", ""])
def test_bad_database_number_names_key_value_and_range(value: str) -> None:
    err = error_for({"transient.db.cache": value})
    assert str(err) == f"transient.db.cache must be an integer from 0 to 15, not {value!r}"
    assert err.key == "transient.db.cache"
    assert err.value == value


def test_configuration_error_is_also_pyramids() -> None:
    assert isinstance(error_for({"transient.db.cache": "x"}), PyramidConfigurationError)


def test_bad_database_name_is_refused() -> None:
    err = error_for({"transient.db.9lives": "1"})
    assert "transient.db.9lives" in str(err) and "'9lives'" in str(err)


def test_unknown_key_names_the_nearest_valid_key() -> None:
    err = error_for({"transient.socket_timout": "1"})
    assert "transient.socket_timout is not a pyramid_transient setting" in str(err)
    assert "did you mean 'transient.socket_timeout'?" in str(err)


def test_unknown_key_in_a_section_names_the_nearest_valid_key() -> None:
    err = error_for({"transient.cache.token_tl": "5"})
    assert "did you mean 'transient.cache.token_ttl'?" in str(err)


def test_url_and_cluster_nodes_together_are_refused() -> None:
    err = error_for({"transient.url": "redis://a", "transient.cluster.nodes": "a:7000"})
    assert "transient.url and transient.cluster.nodes are both set" in str(err)


def test_url_and_sentinel_together_are_refused() -> None:
    err = error_for(
        {
            "transient.url": "redis://a",
            "transient.sentinel.service": "m",
            "transient.sentinel.nodes": "a:26379",
        }
    )
    assert "transient.url and transient.sentinel.service are both set" in str(err)


def test_sentinel_service_without_nodes_is_refused() -> None:
    err = error_for({"transient.sentinel.service": "mymaster"})
    assert err.key == "transient.sentinel.nodes"


def test_sentinel_nodes_without_service_is_refused() -> None:
    err = error_for({"transient.sentinel.nodes": "127.0.0.1:26379"})
    assert err.key == "transient.sentinel.service"


@pytest.mark.parametrize("value", ["a:b", "host", "a:70000", ":1", "a:1 b"])
def test_malformed_node_list_is_refused(value: str) -> None:
    err = error_for({"transient.cluster.nodes": value})
    assert str(err).startswith("transient.cluster.nodes must be a whitespace-separated list")
    assert repr(value) in str(err)


def test_node_list_accepts_spaces_commas_and_ipv6() -> None:
    parsed = parse_settings({"transient.cluster.nodes": "10.0.0.1:7000, [::1]:7001\n h:7002"})
    assert parsed.cluster_nodes == (("10.0.0.1", 7000), ("::1", 7001), ("h", 7002))
    assert parsed.mode == "cluster"


@pytest.mark.parametrize("value", ["http://x", "localhost:6379", "redis:/x"])
def test_bad_url_scheme_is_refused(value: str) -> None:
    err = error_for({"transient.url": value})
    assert "redis://, rediss://, unix:// or memory://" in str(err)


def test_password_like_values_stay_strings() -> None:
    parsed = parse_settings({"transient.sentinel.password": "0123"})
    assert parsed.sentinel_password == "0123"


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("Off", False), ("1", True)])
def test_booleans(raw: str, expected: bool) -> None:
    assert parse_settings({"transient.retry_idempotent": raw}).retry_idempotent is expected


def test_bad_boolean_lists_accepted_spellings() -> None:
    err = error_for({"transient.retry_idempotent": "maybe"})
    assert "true/false" in str(err)


@pytest.mark.parametrize("value", ["0", "-1", "fast", "nan"])
def test_timeouts_must_be_positive_numbers(value: str) -> None:
    err = error_for({"transient.socket_timeout": value})
    assert str(err).startswith("transient.socket_timeout must be a number of seconds")


def test_key_prefix_refuses_braces() -> None:
    err = error_for({"transient.key_prefix": "my{app}"})
    assert "without braces" in str(err)


def test_key_prefix_trailing_colon_is_dropped() -> None:
    assert parse_settings({"transient.key_prefix": "myapp:"}).key_prefix == "myapp"


def test_ssl_cert_reqs_choices() -> None:
    assert parse_settings({"transient.ssl.cert_reqs": "NONE"}).ssl_cert_reqs == "none"
    err = error_for({"transient.ssl.cert_reqs": "sometimes"})
    assert "one of 'none', 'optional', 'required'" in str(err)


def test_cache_region_expirations() -> None:
    parsed = parse_settings(
        {
            "transient.cache.regions": "short long",
            "transient.cache.region.short.expiration": "60",
        }
    )
    assert parsed.cache.regions == ("default", "short", "long")
    assert dict(parsed.cache.region_expiration) == {"short": 60}


def test_message_kinds_extend_the_defaults() -> None:
    parsed = parse_settings({"transient.messages.kinds": "debug info"})
    assert parsed.messages.kinds == ("info", "success", "warning", "error", "debug")


def test_non_string_values_from_code_are_accepted() -> None:
    parsed = parse_settings({"transient.db.cache": 2, "transient.socket_timeout": 0.25})
    assert parsed.databases["cache"] == 2 and parsed.socket_timeout == 0.25


def test_bool_is_not_an_integer() -> None:
    err = error_for({"transient.max_connections": True})  # type: ignore[dict-item]
    assert "an integer of at least 1" in str(err)


def test_every_table_row_parses_its_own_default_shape() -> None:
    # Each row's attribute path exists on the dataclass, so no key silently goes nowhere.
    defaults = TransientSettings()
    for row in SETTINGS.values():
        target: object = defaults
        for attr in row.path:
            assert hasattr(target, attr), row.key
            target = getattr(target, attr)


def test_bad_setting_fails_at_include_time() -> None:
    config = Configurator(settings={"transient.db.cache": "x"})
    with pytest.raises(ConfigurationError, match=r"transient\.db\.cache"):
        config.include("pyramid_transient")


def test_include_does_not_connect() -> None:
    # A server nobody listens on: including must still succeed, since nothing connects.
    config = Configurator(
        settings={"transient.url": "redis://127.0.0.1:1", "redis.sessions.secret": "s"}
    )
    config.include("pyramid_transient")
    config.commit()


def test_password_setting_with_url_is_refused_without_echoing_it() -> None:
    err = error_for({"transient.url": "redis://h", "transient.password": "hunter2"})
    assert "put them in the URL" in str(err) and "hunter2" not in str(err)


def test_password_for_sentinel_data_servers() -> None:
    parsed = parse_settings(
        {
            "transient.sentinel.service": "m",
            "transient.sentinel.nodes": "h:26379",
            "transient.password": "0123",
        }
    )
    assert parsed.password == "0123"


@pytest.mark.parametrize(
    "value", ["redis://[::1:6379", "redis://localhost:abc", "redis://localhost:99999"]
)
def test_bad_url_is_a_configuration_error_at_startup(value: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        manager = RedisManager.from_settings({"transient.url": value})
        manager.get()  # if parsing let it through, the first use must not be the one failing
    assert info.value.key == "transient.url" and value in str(info.value)


@pytest.mark.parametrize(
    ("key", "nearest"),
    [
        ("transient.dbs.celery", "transient.db.celery"),
        ("transient.cache.region.pages.expire", "transient.cache.region.pages.expiration"),
        ("transient.cache.regions.pages.expiration", "transient.cache.region.pages.expiration"),
        ("transient.socket_timout", "transient.socket_timeout"),
    ],
)
def test_did_you_mean_keeps_the_free_name_of_a_pattern_key(key: str, nearest: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        parse_settings({key: "3"})
    assert f"did you mean {nearest!r}?" in str(err.value)
