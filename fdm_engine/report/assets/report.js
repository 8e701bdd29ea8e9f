// fdm report: every <video class="sync"> on the page plays, pauses and seeks together.
// Frames are the shared unit: the slider picks frame f, and each video shows its own frame f
// (a video of another fps plays faster or slower, so that frame numbers stay aligned).
"use strict";
(function () {
  const videos = Array.from(document.querySelectorAll("video.sync"));
  const button = document.getElementById("sync-play");
  const slider = document.getElementById("sync-frame");
  const label = document.getElementById("sync-label");
  if (!button || videos.length === 0) {
    if (button) button.disabled = slider.disabled = true;
    return;
  }
  const fps = (v) => parseFloat(v.dataset.fps);
  const frames = (v) => parseInt(v.dataset.frames, 10);
  const last = Math.max(...videos.map(frames)) - 1;
  // The clock: the video with the most frames; every video advances at its frame rate.
  const clock = videos.reduce((a, b) => (frames(b) > frames(a) ? b : a));
  const rate = fps(clock);
  let playing = false;
  slider.max = String(last);

  const frameOf = (v) => Math.min(frames(v) - 1, Math.floor(v.currentTime * fps(v) + 1e-3));
  const timeOf = (v, f) => (Math.min(f, frames(v) - 1) + 0.5) / fps(v);

  function show(f) {
    slider.value = String(f);
    label.textContent = `frame ${f} / ${last}`;
    for (const v of videos) {
      const note = v.parentElement.querySelector(".frame-note");
      if (!note) continue;
      const g = Math.min(f, frames(v) - 1);
      note.textContent = `${g}` + (g < parseInt(v.dataset.nobs || "0", 10) ? " (given)" : "");
    }
  }

  function quietly(promise) {
    // pause() while play() is pending rejects play's promise with AbortError: expected, not an error.
    if (promise) promise.catch((e) => { if (e.name !== "AbortError") console.error(e); });
  }

  function seek(f) {
    f = Math.max(0, Math.min(last, f));
    for (const v of videos) v.currentTime = timeOf(v, f);
    show(f);
  }

  function pause() {
    playing = false;
    button.textContent = "play";
    for (const v of videos) v.pause();
  }

  function play() {
    if (frameOf(clock) >= last) seek(0);
    playing = true;
    button.textContent = "pause";
    for (const v of videos) {
      v.playbackRate = rate / fps(v);
      quietly(v.play());
    }
    requestAnimationFrame(tick);
  }

  function tick() {
    if (!playing) return;
    const f = frameOf(clock);
    for (const v of videos) {
      if (v === clock || v.ended || f >= frames(v)) continue;
      if (Math.abs(frameOf(v) - f) > 1) v.currentTime = timeOf(v, f); // drifted: snap back
    }
    show(f);
    requestAnimationFrame(tick);
  }

  clock.addEventListener("ended", () => { pause(); show(last); });
  button.addEventListener("click", () => (playing ? pause() : play()));
  slider.addEventListener("input", () => { pause(); seek(parseInt(slider.value, 10)); });
  document.getElementById("sync-prev").addEventListener("click", () => { pause(); seek(parseInt(slider.value, 10) - 1); });
  document.getElementById("sync-next").addEventListener("click", () => { pause(); seek(parseInt(slider.value, 10) + 1); });
  for (const v of videos) v.addEventListener("click", () => (playing ? pause() : play()));
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT" || e.target.tagName === "BUTTON") return; // they have their own keys
    if (e.key === " ") { e.preventDefault(); playing ? pause() : play(); }
    else if (e.key === "ArrowLeft") { pause(); seek(parseInt(slider.value, 10) - 1); }
    else if (e.key === "ArrowRight") { pause(); seek(parseInt(slider.value, 10) + 1); }
  });
  show(0);
})();
