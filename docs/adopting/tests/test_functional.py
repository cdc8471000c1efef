import pytest


def test_a_rename_moves_the_cached_page_and_flashes_on_commit(transient_testapp, welcome):
    assert "<h1>Welcome</h1>" in transient_testapp.get("/page/1").text
    page = transient_testapp.post("/page/1/rename", {"title": "Renamed"}).follow()
    assert "<h1>Renamed</h1>" in page.text
    assert "Renamed to Renamed." in page.text


def test_an_aborted_rename_changes_nothing(transient_testapp, welcome):
    transient_testapp.get("/page/1")
    with pytest.raises(ValueError, match="aborts"):
        transient_testapp.post("/page/1/rename", {"title": "Never", "fail": "1"})
    page = transient_testapp.get("/page/1")
    assert "<h1>Welcome</h1>" in page.text and "Never" not in page.text
