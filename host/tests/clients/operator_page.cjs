// Drives the operator page in headless Chromium as an operator would: signs in with the
// bearer token, finds the player, presses Listen, and waits until the audio element plays.
// Then plays the player's live HLS (HLS_URL) with hls.js in a page of its own, as a web player
// beside the call would. Prints one JSON line with what it saw; a screenshot goes to SCREENSHOT.
"use strict";
const puppeteer = require("puppeteer-core");

const base = process.env.BASE_URL;
const token = process.env.AUTH_TOKEN;
const player = process.env.PLAYER_ID;

(async () => {
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--autoplay-policy=no-user-gesture-required", "--disable-dev-shm-usage"],
  });
  const problems = [];
  try {
    const page = await browser.newPage();
    page.on("console", (m) => { if (m.type() === "error") problems.push("console: " + m.text()); });
    page.on("pageerror", (e) => problems.push("page: " + e.message));
    page.on("requestfailed", (r) => {
      // Leaving the page cuts the endless stream; that is not a failure of the page.
      if (!r.url().includes("/listen")) problems.push("request: " + r.url() + " " + (r.failure() || {}).errorText);
    });
    await page.goto(base + "/ui", { waitUntil: "load" });
    await page.type("#token", token);
    await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click("button[type=submit]")]);
    const row = `tr[data-player="${player}"]`;
    await page.waitForSelector(row, { timeout: 15000 });
    const nowPlaying = await page.$eval(row + " td:nth-child(4)", (td) => td.textContent);
    const status = await page.$eval(row + " .status", (td) => td.textContent);
    await page.click(row + " button");
    await page.waitForFunction(() => document.getElementById("audio").currentTime > 2, { timeout: 20000, polling: 200 });
    // The page hears about its own listener through the event stream.
    await page.waitForFunction((r) => document.querySelector(r + " .listeners")?.textContent === "1", { timeout: 10000 }, row);
    const currentTime = await page.$eval("#audio", (a) => a.currentTime);
    await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
    await page.close();

    const web = await browser.newPage();
    web.on("console", (m) => { if (m.type() === "error") problems.push("hls page console: " + m.text()); });
    web.on("pageerror", (e) => problems.push("hls page: " + e.message));
    await web.setContent("<!doctype html><html><body><audio id=a></audio></body></html>");
    await web.addScriptTag({ path: require.resolve("hls.js/dist/hls.min.js") });
    const hlsSupported = await web.evaluate((url) => {
      if (!window.Hls.isSupported()) return false;
      const hls = new window.Hls({ liveSyncDurationCount: 2 });
      hls.on(window.Hls.Events.ERROR, (_, data) => { if (data.fatal) console.error("hls.js: " + data.type + " " + data.details); });
      hls.loadSource(url);
      hls.attachMedia(document.getElementById("a"));
      hls.on(window.Hls.Events.MANIFEST_PARSED, () => document.getElementById("a").play());
      return true;
    }, process.env.HLS_URL);
    await web.waitForFunction(() => document.getElementById("a").currentTime > 2, { timeout: 30000, polling: 200 });
    const hlsTime = await web.$eval("#a", (a) => a.currentTime);
    console.log(JSON.stringify({ nowPlaying, status, currentTime, hlsSupported, hlsTime, problems }));
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
