"""`minidlc report`: one self-contained HTML page. Its structure is checked by
parsing it: every section, every internal link resolves, nothing external."""
from html.parser import HTMLParser

import pytest

from minidlc import machine
from minidlc.cli import main
from minidlc.demo_models import build_model
from minidlc.report import SECTIONS, build_report
from test_profiler import PEAKS


class _Page(HTMLParser):
    def __init__(self, text: str):
        super().__init__()
        self.ids, self.links, self.external, self.tags = set(), [], [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and a.get("href", "").startswith("#"):
            self.links.append(a["href"][1:])
        for key in ("src", "href"):
            if a.get(key, "").startswith(("http:", "https:", "//")):
                self.external.append(a[key])


@pytest.mark.parametrize("target", ["llvm", "reference"])
def test_report_sections_links_and_no_external_resources(target, monkeypatch):
    monkeypatch.setattr(machine, "peaks", lambda remeasure=False: PEAKS)
    text = build_report(build_model("convnet"), target=target, profile=target == "llvm")
    page = _Page(text)
    kernels = target == "llvm"
    want = {k for k in SECTIONS if kernels or k not in ("kernels", "memory", "profile")}
    assert want <= page.ids and set(page.links) <= page.ids
    assert not page.external and "script" not in page.tags
    assert "fused_conv_add_relu = Conv + Add + Relu: out-fusable Conv" in text  # the fusion explanation
    assert "diff after fuse-layers" in text and "<span class='del'>" in text  # the passes' diffs
    if kernels:
        assert page.links.count("k_fused_conv_relu") == 1 and "k_fused_conv_relu" in page.ids
        assert "LLVM IR after O3" in text and "define " in text
        assert text.count("<rect ") > 5 and "lower bound of any plan" in text  # the memory chart
        assert "GFLOP/s" in text  # the profile


def test_report_on_the_command_line(tmp_path, capsys):
    path = tmp_path / "mlp.onnx"
    path.write_bytes(build_model("mlp").SerializeToString())
    out = tmp_path / "r.html"
    assert main(["report", str(path), "-o", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out}")
    assert _Page(out.read_text()).ids >= {"model", "passes", "fusion", "graphs", "kernels", "memory"}
