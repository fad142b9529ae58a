//! A real browser opens what ivbench publishes: headless Chromium (Debian's `chromium`, no
//! network, background networking off) renders report.html and the published site's
//! pages; the test asserts that the SVG plots were drawn (plot-blue pixels in the
//! screenshot), that the console logged nothing, and keeps the screenshots
//! (IVBENCH_SCREENSHOTS, which CI points into its run files).
//!
//! Without Chromium it prints a loud SKIPPED line, unless IVBENCH_REQUIRE_BROWSER=1 (set by
//! CI, which installs it), where that is a failure.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ivbench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ivbench")).args(args).output().expect("ivbench runs")
}

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"].iter().map(PathBuf::from).find(|p| p.is_file())
}

/// The plots' curve colour (report::plots BAR) and their bar fill (BAR at 85% on white):
/// which of the two fills the first screen depends on the layout, so both count.
const PLOT_BLUES: [[u8; 3]; 2] = [[70, 120, 180], [98, 140, 191]];

/// Screenshot of `page`; returns (pixels of the plot colour, console lines).
fn render(browser: &Path, page: &Path, shot: &Path, profile: &Path) -> (usize, Vec<String>) {
    let o = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1280,2400",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    assert!(o.status.success(), "chromium failed on {}: {}", page.display(), String::from_utf8_lossy(&o.stderr));
    let console: Vec<String> = String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE(") || l.contains("Uncaught"))
        .map(String::from)
        .collect();
    let decoder = png::Decoder::new(std::io::BufReader::new(fs::File::open(shot).expect("a screenshot was written")));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = info.color_type.samples();
    let blue = buf[..info.buffer_size()]
        .chunks(step)
        .filter(|p| p.len() >= 3 && PLOT_BLUES.iter().any(|c| p[..3].iter().zip(c).all(|(a, b)| a.abs_diff(*b) <= 12)))
        .count();
    (blue, console)
}

#[test]
fn chromium_renders_the_report_and_the_site_without_console_errors() {
    let Some(browser) = chromium() else {
        if std::env::var("IVBENCH_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!("IVBENCH_REQUIRE_BROWSER=1 but no chromium: apt-get install chromium");
        }
        println!("SKIPPED: no chromium (apt-get install chromium): the report and site were not opened in a browser");
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let runs = d.path().join("runs");
    for args in [
        vec!["host.syscall.getppid"],
        vec!["host.memcpy", "--params", "size=64", "--method", "batched"],
        vec!["host.syscall.getppid"],
    ] {
        let mut a = vec!["run"];
        a.extend(args);
        a.extend(["--iterations", "500", "--out", runs.to_str().unwrap()]);
        assert_eq!(ivbench(&a).status.code(), Some(0));
    }
    let site = d.path().join("site");
    let o = ivbench(&[
        "publish",
        "--out",
        site.to_str().unwrap(),
        "--runs",
        runs.to_str().unwrap(),
        "--db",
        d.path().join("h.sqlite").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let report = d.path().join("report.html");
    let o = ivbench(&["report", "latest", "--runs", runs.to_str().unwrap(), "--out", report.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));

    let shots = std::env::var_os("IVBENCH_SCREENSHOTS").map(PathBuf::from).unwrap_or_else(|| d.path().join("shots"));
    fs::create_dir_all(&shots).unwrap();
    let profile = d.path().join("profile");
    for (name, page, plots) in [
        ("report", report.clone(), true),
        ("site-index", site.join("index.html"), false),
        ("site-probe", site.join("probes/host.syscall.getppid.html"), true),
        ("site-classes", site.join("classes.html"), false),
    ] {
        let shot = shots.join(format!("{name}.png"));
        let (blue, console) = render(&browser, &page, &shot, &profile);
        assert!(console.is_empty(), "{name}: the console logged {console:?}");
        if plots {
            assert!(
                blue > 500,
                "{name}: only {blue} plot-coloured pixels: the SVG plots did not render ({})",
                shot.display()
            );
        }
        println!("{name}: {} ({blue} plot pixels)", shot.display());
    }
}
