// The call page's player: a timeline (with the waveform when the browser can decode it)
// under the <audio> element; click or arrow keys to seek; on the disclosure form, "mark
// start" / "mark end" copy the current position into the range fields.
(function () {
  "use strict";
  var audio = document.getElementById("audio");
  var canvas = document.getElementById("timeline");
  if (!audio || !canvas) { return; }
  var out = document.getElementById("position");
  var from = document.getElementById("f-from");
  var to = document.getElementById("f-to");
  var ctx = canvas.getContext("2d");
  var peaks = null;
  var fallbackMs = parseInt(canvas.dataset.durationMs || "0", 10);

  function duration() {
    return isFinite(audio.duration) && audio.duration > 0 ? audio.duration : fallbackMs / 1000;
  }
  function fmt(seconds) {
    var ms = Math.max(0, Math.round(seconds * 1000));
    var m = Math.floor(ms / 60000), s = Math.floor((ms % 60000) / 1000), f = ms % 1000;
    return String(m).padStart(2, "0") + ":" + String(s).padStart(2, "0") + "." + String(f).padStart(3, "0");
  }
  function parse(text) {
    var m = /^(\d+):(\d{2})(?:\.(\d{1,3}))?$/.exec((text || "").trim());
    if (!m) { return null; }
    return parseInt(m[1], 10) * 60 + parseInt(m[2], 10) + parseInt((m[3] || "0").padEnd(3, "0"), 10) / 1000;
  }
  function draw() {
    var w = canvas.width, h = canvas.height, d = duration();
    ctx.fillStyle = "#f1f3f5"; ctx.fillRect(0, 0, w, h);
    if (peaks) {
      ctx.fillStyle = "#8aa4c8";
      for (var x = 0; x < w; x++) {
        var p = peaks[x] || 0;
        ctx.fillRect(x, h / 2 - p * h / 2, 1, Math.max(1, p * h));
      }
    }
    if (d > 0) {
      var a = from ? parse(from.value) : null, b = to ? parse(to.value) : null;
      if (a !== null && b !== null && b > a) {
        ctx.fillStyle = "rgba(200, 120, 0, 0.35)";
        ctx.fillRect(a / d * w, 0, (b - a) / d * w, h);
      }
      var step = d > 600 ? 60 : d > 120 ? 10 : d > 20 ? 5 : 1;
      ctx.fillStyle = "#1d2733"; ctx.font = "11px sans-serif";
      for (var t = 0; t <= d; t += step) {
        var tx = Math.round(t / d * (w - 1));
        ctx.fillRect(tx, h - 8, 1, 8);
        if (t % (step * 2) === 0) { ctx.fillText(fmt(t).slice(0, 5), tx + 2, h - 10); }
      }
      var px = audio.currentTime / d * w;
      ctx.fillStyle = "rgba(0, 70, 160, 0.25)"; ctx.fillRect(0, 0, px, h);
      ctx.fillStyle = "#b00020"; ctx.fillRect(px - 1, 0, 2, h);
    }
    if (out) { out.textContent = fmt(audio.currentTime); }
    canvas.setAttribute("aria-valuenow", String(Math.floor(audio.currentTime)));
    canvas.setAttribute("aria-valuetext", fmt(audio.currentTime));
  }
  function seek(seconds) {
    var d = duration();
    audio.currentTime = Math.min(Math.max(0, seconds), d || seconds);
    draw();
  }
  canvas.addEventListener("click", function (ev) {
    var r = canvas.getBoundingClientRect();
    seek((ev.clientX - r.left) / r.width * duration());
  });
  canvas.addEventListener("keydown", function (ev) {
    if (ev.key === "ArrowRight") { seek(audio.currentTime + 5); ev.preventDefault(); }
    else if (ev.key === "ArrowLeft") { seek(audio.currentTime - 5); ev.preventDefault(); }
    else if (ev.key === "Home") { seek(0); ev.preventDefault(); }
    else if (ev.key === "End") { seek(duration()); ev.preventDefault(); }
    else if (ev.key === " ") { if (audio.paused) { audio.play(); } else { audio.pause(); } ev.preventDefault(); }
  });
  ["timeupdate", "loadedmetadata", "seeked", "durationchange"].forEach(function (name) {
    audio.addEventListener(name, draw);
  });
  function mark(button, field) {
    if (button && field) {
      button.addEventListener("click", function () { field.value = fmt(audio.currentTime); draw(); });
      field.addEventListener("input", draw);
    }
  }
  mark(document.getElementById("mark-start"), from);
  mark(document.getElementById("mark-end"), to);

  // The waveform is a bonus: the same (already granted) file, decoded in the browser.
  if (window.AudioContext && window.fetch) {
    fetch(audio.currentSrc || audio.src, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.arrayBuffer() : Promise.reject(r.status); })
      .then(function (buf) { return new AudioContext().decodeAudioData(buf); })
      .then(function (decoded) {
        var data = decoded.getChannelData(0), w = canvas.width, per = Math.max(1, Math.floor(data.length / w));
        var out2 = new Float32Array(w), max = 0;
        for (var x = 0; x < w; x++) {
          var peak = 0;
          for (var i = x * per; i < Math.min(data.length, (x + 1) * per); i++) {
            var v = Math.abs(data[i]); if (v > peak) { peak = v; }
          }
          out2[x] = peak; if (peak > max) { max = peak; }
        }
        if (max > 0) { for (var k = 0; k < w; k++) { out2[k] /= max; } }
        peaks = out2; draw();
      })
      .catch(function () { /* the timeline alone still works */ });
  }
  draw();
})();
