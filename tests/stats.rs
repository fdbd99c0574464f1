//! The `/stats` page in a real browser: headless chromium inside lb1's namespace loads it after
//! some traffic and a switchover, its rendered DOM must show the load balancers, the recent
//! events and the traffic charts, and its screenshot must be a PNG of the requested size that
//! is not one blank colour.

use std::{
    fs,
    path::Path,
    process::{Command, Output},
    time::Duration,
};

use pglb_tests::{Lab, lb_config, netns, ok, pglb_bin, poll_until, run, stderr, stdout};

/// Where the screenshot is left for a person to look at (overwritten by the next run).
const SCREENSHOT: &str = "/tmp/pglb-stats-screenshot.png";
const BLANK: &str = "/tmp/pglb-stats-blank.png";
const URL: &str = "http://127.0.0.1:8404/stats";
const WIDTH: u32 = 1200;
const HEIGHT: u32 = 1600;

/// chromium, headless, inside a lab host's namespace, with a profile of its own; bounded by
/// `timeout` so a browser that hangs fails the test instead of holding the lab.
fn chromium(host: &str, args: &[&str]) -> Output {
    let profile = format!("/tmp/pglb-stats-chromium-{}", std::process::id());
    let out = Command::new("timeout")
        .args(["120", "ip", "netns", "exec", &netns(host), "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"])
        .arg(format!("--user-data-dir={profile}"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("could not start chromium (cargo xtask setup installs it): {e}"));
    let _ = fs::remove_dir_all(&profile);
    out
}

/// `/stats` as curl sees it from lb1's namespace.
fn stats_page() -> String {
    let out = run(&["lab", "exec", "lb1", "--", "curl", "-s", "-m", "2", URL]);
    assert!(out.status.success(), "curl {URL} in lb1 failed: {}", stderr(&out));
    stdout(&out)
}

/// The width and height in a PNG's IHDR chunk (after the 8-byte signature and the chunk's
/// length and type).
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.len() > 24 && png[..8] == *b"\x89PNG\r\n\x1a\n" && png[12..16] == *b"IHDR", "not a PNG ({} bytes)", png.len());
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().expect("4 bytes"));
    (be(16), be(20))
}

/// Decodes the PNG with python3's zlib (no image crate in the tree) and returns (distinct
/// colours, share of pixels that differ from the most common colour); `None` without python3.
fn png_colours(path: &str) -> Option<(usize, f64)> {
    const DECODE: &str = r#"
import sys, zlib, struct, collections
data = open(sys.argv[1], 'rb').read()
pos, idat, ihdr = 8, b'', None
while pos < len(data):
    n, kind = struct.unpack('>I4s', data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b'IHDR': ihdr = struct.unpack('>IIBBBBB', body)
    if kind == b'IDAT': idat += body
    pos += 12 + n
w, h, depth, ctype, _, _, interlace = ihdr
assert depth == 8 and interlace == 0 and ctype in (2, 6), ihdr
bpp = 3 if ctype == 2 else 4
raw, stride = zlib.decompress(idat), w * bpp
prev, rows, i = bytearray(stride), [], 0
for _ in range(h):
    f, line = raw[i], bytearray(raw[i + 1:i + 1 + stride]); i += 1 + stride
    for x in range(stride):
        a = line[x - bpp] if x >= bpp else 0; b = prev[x]; c = prev[x - bpp] if x >= bpp else 0
        if f == 1: line[x] = (line[x] + a) & 255
        elif f == 2: line[x] = (line[x] + b) & 255
        elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    rows.append(bytes(line)); prev = line
counts = collections.Counter(r[x:x + bpp] for r in rows for x in range(0, stride, bpp))
print(len(counts), 1 - counts.most_common(1)[0][1] / (w * h))
"#;
    let out = Command::new("python3").args(["-c", DECODE, path]).output().ok()?;
    assert!(out.status.success(), "decoding {path} with python3 failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (colours, share) = text.trim().split_once(' ').unwrap_or_else(|| panic!("python3 printed {text:?}"));
    Some((colours.parse().expect("a count"), share.parse().expect("a share")))
}

#[test]
fn stats_page_renders_in_headless_chromium() {
    let _lab = Lab::up();

    // Traffic for the charts: a few connections through each port.
    for _ in 0..3 {
        ok(&["lab", "psql", "--", "-Atc", "SELECT 1"]);
        ok(&["lab", "psql", "--port", "3001", "--", "-Atc", "SELECT 1"]);
    }
    // Events: lb1 became VRRP master at start; a switchover adds one with its duration.
    let out = Command::new(pglb_bin())
        .args(["switchover", "--to", "pg2", "--config"])
        .arg(lb_config("lb1"))
        .env("PGLB_LOG", "warn")
        .output()
        .expect("running pglb switchover");
    assert!(out.status.success() && stdout(&out).contains("switchover done: pg1 -> pg2"), "pglb switchover: {}{}", stdout(&out), stderr(&out));
    // The sampler reads the counters every 5 s: wait for the charts to have lines of two points.
    poll_until(Duration::from_secs(30), Duration::from_millis(500), "/stats on lb1 to show the switchover and traffic chart lines", || {
        let page = stats_page();
        let line = page.split("<polyline").nth(1).and_then(|p| p.split("points=\"").nth(1)).and_then(|p| p.split('"').next());
        page.contains("switchover done: pg1 -&gt; pg2") && line.is_some_and(|points| points.contains(' '))
    });

    let dom = chromium("lb1", &["--dump-dom", URL]);
    assert!(dom.status.success(), "chromium --dump-dom failed ({}): {}", dom.status, stderr(&dom));
    let dom = stdout(&dom);
    let peers = dom.split("id=\"peers\"").nth(1).unwrap_or_else(|| panic!("no load balancer table in the DOM:\n{dom}"));
    let peers = peers.split("</table>").next().unwrap_or_default();
    assert!(peers.contains("lb1 (this instance)") && peers.contains("master") && peers.contains("150"), "lb1's own row: {peers}");
    assert!(peers.contains("172.20.0.22") && peers.contains("backup"), "lb2 as a backup that reports: {peers}");
    let events = dom.split("id=\"events\"").nth(1).unwrap_or_else(|| panic!("no events in the DOM:\n{dom}"));
    let events = events.split("</table>").next().unwrap_or_default();
    assert!(events.contains("this instance became VRRP master"), "the VRRP transition at start: {events}");
    assert!(events.contains("switchover done: pg1 -&gt; pg2") && events.contains(" ms</td>"), "the switchover with its duration: {events}");
    assert!(events.contains("started (UTC)") && events.contains("Z</td>"), "RFC 3339 timestamps in UTC: {events}");
    assert_eq!(dom.matches("<svg").count(), 2, "two charts (connections, packets):\n{dom}");
    assert!(dom.contains("<polyline"), "the charts have lines:\n{dom}");

    let _ = fs::remove_file(SCREENSHOT);
    let window = format!("--window-size={WIDTH},{HEIGHT}");
    let shot = chromium("lb1", &[&format!("--screenshot={SCREENSHOT}"), &window, URL]);
    assert!(Path::new(SCREENSHOT).exists(), "chromium wrote no screenshot ({}): {}", shot.status, stderr(&shot));
    let png = fs::read(SCREENSHOT).expect("reading the screenshot");
    assert_eq!(png_size(&png), (WIDTH, HEIGHT), "the screenshot has the requested size");
    // A blank page of the same size compresses to almost nothing: the rendered page must not.
    let blank = chromium("lb1", &[&format!("--screenshot={BLANK}"), &window, "about:blank"]);
    let blank_len = fs::metadata(BLANK).map(|m| m.len()).unwrap_or_else(|e| panic!("no blank screenshot ({e}): {}", stderr(&blank)));
    let _ = fs::remove_file(BLANK);
    assert!(png.len() as u64 > 3 * blank_len, "the screenshot ({} bytes) is not much larger than a blank page's ({blank_len} bytes)", png.len());
    match png_colours(SCREENSHOT) {
        Some((colours, share)) => {
            eprintln!("{SCREENSHOT}: {colours} distinct colours, {:.1}% of the pixels not the background", share * 100.0);
            assert!(colours >= 8 && share >= 0.01, "the screenshot looks blank: {colours} colours, {share} of pixels not the background");
        }
        None => eprintln!("python3 not found: the screenshot is checked by size only"),
    }
    eprintln!("screenshot of /stats: {SCREENSHOT} ({} bytes; a blank page: {blank_len} bytes)", png.len());
}
