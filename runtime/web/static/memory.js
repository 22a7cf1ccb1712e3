// The memory search: text or an image -> the top-k remembered crops, with paging. Used by both pages.
"use strict";
function initMemory() {
  const form = document.getElementById("search"), input = document.getElementById("search-q");
  const kSelect = document.getElementById("search-k"), file = document.getElementById("search-image");
  const results = document.getElementById("results"), error = document.getElementById("search-error");
  const pageLabel = document.getElementById("page"), prev = document.getElementById("prev"), next = document.getElementById("next");
  const summary = document.getElementById("search-summary");
  let last = null;  // {kind: "text"|"image", q|blob, page}

  const fmtTime = t => t == null ? "-" : new Date(t * 1000).toLocaleTimeString();
  const esc = s => String(s).replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));

  function show(answer) {
    results.innerHTML = "";
    for (const hit of answer.results) {
      const div = document.createElement("div");
      div.className = "hit";
      div.dataset.id = hit.id;
      const where = hit.source === "stream" || hit.frame != null ? `frame ${hit.frame ?? "-"}` : esc(hit.name);
      const at = hit.frame_time != null && hit.source !== "stream" ? ` @ ${hit.frame_time.toFixed(2)} s` : "";
      const picture = hit.thumb ? `<img src="${hit.thumb}" alt="result ${hit.rank}" loading="lazy">`
                                : `<div class="missing">${esc(hit.thumb_note || "no thumbnail")}</div>`;
      div.innerHTML = `${picture}<div><span class="score">#${hit.rank} ${hit.score.toFixed(3)}</span>` +
        (hit.label ? ` ${esc(hit.label)}` : "") + `</div><div class="meta">${where}${at}</div>` +
        `<div class="meta">${fmtTime(hit.added_at)}` + (hit.depth_m != null ? ` · ${hit.depth_m.toFixed(2)} m` : "") + `</div>` +
        `<div class="meta" title="${esc(hit.path)}">${esc(hit.source)}</div>`;
      results.appendChild(div);
    }
    const from = answer.page * answer.k + 1, to = answer.page * answer.k + answer.results.length;
    summary.textContent = answer.results.length ? `results ${from}-${to} of ${answer.items} remembered items`
                                                : `no results (${answer.items} remembered items)`;
    pageLabel.textContent = `page ${answer.page + 1}`;
    prev.disabled = answer.page === 0;
    next.disabled = !answer.more;
  }

  async function run(query) {
    error.textContent = "";
    const k = kSelect.value;
    let response;
    try {
      if (query.kind === "text") {
        response = await fetch(`/api/search?q=${encodeURIComponent(query.q)}&k=${k}&page=${query.page}`);
      } else {
        response = await fetch(`/api/search/image?k=${k}&page=${query.page}`,
                               {method: "POST", body: query.blob, headers: {"Content-Type": query.blob.type || "application/octet-stream"}});
      }
      const text = await response.text();
      let answer;
      try { answer = JSON.parse(text); } catch (e) { answer = {error: text}; }
      if (!response.ok) { error.textContent = answer.error || text; return; }
      last = query;
      show(answer);
    } catch (e) {
      error.textContent = "the server did not answer: " + e;
    }
  }

  form.addEventListener("submit", ev => { ev.preventDefault(); run({kind: "text", q: input.value, page: 0}); });
  file.addEventListener("change", () => { if (file.files.length) run({kind: "image", blob: file.files[0], page: 0}); file.value = ""; });
  prev.addEventListener("click", () => { if (last && last.page > 0) run({...last, page: last.page - 1}); });
  next.addEventListener("click", () => { if (last) run({...last, page: last.page + 1}); });
  fetch("/api/memory").then(r => r.json()).then(info => {
    summary.textContent = `${info.items} remembered items` + (info.model ? ` (${info.model})` : "") + (info.note ? ` - ${info.note}` : "");
  }).catch(() => {});
}
