"""``meter-emu phy ber`` and ``meter-emu phy spectrum`` (issue 9, Deliver 5), run as a user
runs them: real subprocesses, small --frames."""

from __future__ import annotations

import re
import subprocess
import sys

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meter_emu.cli", *args], capture_output=True,
                          text=True, timeout=120)


def test_ber_writes_a_png_and_prints_figures_that_follow_theory(tmp_path):
    out = tmp_path / "ber.png"
    r = run("phy", "ber", "--out", str(out), "--frames", "20", "--ebn0", "0:6:3", "--seed", "3")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert f"wrote {out}" in r.stdout
    rows = re.findall(r"^\s+([\d.]+) +([\d.e+-]+) +([\d.e+-]+) +([\d.e+-]+) +([\d.]+)$",
                      r.stdout, re.M)
    assert [float(row[0]) for row in rows] == [0.0, 3.0, 6.0]
    for ebn0, theory, uncoded, coded, fer in ((float(v) for v in row) for row in rows):
        # 20 frames x 1064 bits: at these rates the measurement is within a factor 2 of theory
        assert theory / 2 < uncoded < theory * 2
        assert 0 <= fer <= 1 and 0 <= coded < 0.2
    assert float(rows[0][4]) == 1.0    # at 0 dB no 110-byte frame survives


def test_spectrum_writes_a_png_with_both_carriers_inside_the_a_band(tmp_path):
    out = tmp_path / "spectrum.png"
    r = run("phy", "spectrum", "--out", str(out), "--snr", "20")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == PNG_MAGIC
    widths = [float(w) for w in re.findall(r"occupied bandwidth ([\d.]+) kHz", r.stdout)]
    outside = [float(v) for v in re.findall(r"outside 9-95 kHz (-?[\d.]+) dB", r.stdout)]
    assert len(widths) == len(outside) == 2
    assert all(3.6 < w < 5.4 for w in widths)       # between Rs and (1 + rolloff) Rs
    assert all(v < -40 for v in outside)
    estimated = float(re.search(r"estimated (-?[\d.]+) dB", r.stdout).group(1))
    assert abs(estimated - 20) < 1.0


def test_bad_arguments_and_missing_matplotlib_exit_2(tmp_path):
    assert run("phy", "ber", "--ebn0", "nonsense").returncode == 2
    assert run("phy", "ber", "--frames", "0").returncode == 2
    code = ("import sys; sys.modules['matplotlib'] = None; from meter_emu.cli import main; "
            f"sys.exit(main(['phy', 'spectrum', '--out', {str(tmp_path / 'x.png')!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "install meter_emu[plots]" in r.stderr
    assert not (tmp_path / "x.png").exists()
