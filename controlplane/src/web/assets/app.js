// The page of `beeline web`. Every name and tag comes from users: it is written with
// textContent or as an attribute value, never parsed as HTML.
"use strict";

(function () {
  const state = { query: "", name: "", selected: null, graph: null, cy: null, cspViolations: [] };
  // What the page shows, for tests and for curious users: window.__beeline.
  window.__beeline = { results: [], details: null, ready: false, errors: [], cspViolations: state.cspViolations };
  document.addEventListener("securitypolicyviolation", (event) => {
    state.cspViolations.push(event.violatedDirective + " " + event.blockedURI);
  });

  const $ = (id) => document.getElementById(id);

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function say(text) {
    $("message").textContent = text || "";
    if (text) window.__beeline.errors.push(text);
  }

  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
  }

  async function api(path, options) {
    options = options || {};
    const headers = Object.assign({}, options.headers || {});
    if (options.method && options.method !== "GET") headers["X-Beeline"] = "1";
    const response = await fetch(path, Object.assign({}, options, { headers, credentials: "same-origin" }));
    const text = await response.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
    if (!response.ok) {
      throw new Error((body && body.error) || text.trim() || ("HTTP " + response.status));
    }
    return body;
  }

  const q = (name) => encodeURIComponent(name);

  // ---- the cluster ----
  async function loadCluster() {
    try {
      const view = await api("/api/cluster");
      $("cluster-summary").textContent =
        view.mode + ": " + view.nodes.length + " node(s), " + view.files + " file(s), " +
        bytes(view.used_bytes) + " used; replication " + view.replication;
      const body = $("cluster-nodes").tBodies[0];
      body.replaceChildren();
      for (const node of view.nodes) {
        const row = el("tr");
        const used = node.capacity_bytes > 0 ? bytes(node.used_bytes) + " / " + bytes(node.capacity_bytes) : bytes(node.used_bytes);
        for (const cell of [node.id, node.address, node.state, node.health, used]) row.append(el("td", cell));
        body.append(row);
      }
    } catch (error) {
      $("cluster-summary").textContent = "cluster: " + error.message;
    }
  }

  // ---- search, results and autocomplete ----
  function tagChip(tag, source) {
    const chip = el("button", tag, source && source !== "user" ? "tag auto" : "tag");
    chip.type = "button";
    chip.title = source ? "source: " + source : "";
    chip.addEventListener("click", () => showTag(tag));
    return chip;
  }

  function queryString() {
    return "q=" + q(state.query) + "&name=" + q(state.name);
  }

  async function search(query, name) {
    state.query = query;
    if (name !== undefined) state.name = name;
    $("search").value = query;
    $("name-filter").value = state.name;
    const parts = [];
    if (query) parts.push("tags " + query);
    if (state.name) parts.push("name containing " + state.name);
    $("results-title").textContent = parts.length ? "Files with " + parts.join(" and ") : "All files";
    try {
      const files = await api("/api/files?" + queryString());
      window.__beeline.results = files.map((f) => f.name);
      const list = $("results");
      list.replaceChildren();
      for (const file of files) {
        const item = el("li");
        item.dataset.name = file.name;
        const name = el("button", file.name, "name");
        name.type = "button";
        name.addEventListener("click", () => showFile(file.name));
        item.append(name, el("span", " " + bytes(file.size_bytes)));
        const tags = el("ul", null, "tags");
        for (const tag of file.tags) {
          const li = el("li");
          li.append(tagChip(tag.tag, tag.source));
          tags.append(li);
        }
        item.append(tags);
        list.append(item);
      }
      if (files.length === 0) list.append(el("li", "no files"));
      say("");
      await loadGraph();
    } catch (error) {
      say("search: " + error.message);
    }
  }

  function showTag(tag) {
    search(tag, "");
  }

  let completing = 0;
  // Completes the tag being typed: the text after the last space or operator.
  async function complete() {
    const input = $("search");
    const text = input.value;
    const match = /[^\s&|!()]*$/.exec(text);
    const word = match ? match[0] : "";
    const list = $("suggestions");
    if (!word) { list.replaceChildren(); return; }
    const ticket = ++completing;
    try {
      const tags = await api("/api/tags?prefix=" + q(word));
      if (ticket !== completing) return;
      list.replaceChildren();
      for (const tag of tags) {
        const item = el("li", tag.tag + " (" + tag.files + ")");
        item.setAttribute("role", "option");
        item.dataset.tag = tag.tag;
        item.addEventListener("mousedown", (event) => {
          event.preventDefault();
          input.value = text.slice(0, text.length - word.length) + tag.tag + " ";
          list.replaceChildren();
          input.focus();
        });
        list.append(item);
      }
    } catch (_) {
      list.replaceChildren();
    }
  }

  // ---- the graph ----
  async function loadGraph() {
    let graph;
    try {
      graph = await api("/api/graph?" + queryString());
    } catch (error) {
      $("graph-note").textContent = "graph: " + error.message;
      return;
    }
    state.graph = graph;
    const elements = [];
    for (const node of graph.nodes) {
      elements.push({ group: "nodes", data: { id: node.id, label: node.label, kind: node.kind } });
    }
    for (const edge of graph.edges) {
      elements.push({ group: "edges", data: { id: edge.file + "\u0000" + edge.tag, source: edge.file, target: edge.tag, origin: edge.source } });
    }
    $("graph-note").textContent = graph.nodes.length + " nodes, " + graph.edges.length + " edges" +
      (graph.truncated ? " (more left out: narrow the search)" : "");
    if (typeof window.cytoscape !== "function") {
      $("graph-note").textContent += "; the graph library did not load";
      return;
    }
    if (state.cy) state.cy.destroy();
    const cy = window.cytoscape({
      container: $("graph"),
      elements,
      wheelSensitivity: 0.3,
      maxZoom: 2.5,
      style: [
        { selector: "node", style: { label: "data(label)", "font-size": 10, "text-valign": "bottom", "text-margin-y": 3 } },
        { selector: "node[kind = 'file']", style: { "background-color": "#2f6fde", shape: "round-rectangle", width: 18, height: 14 } },
        { selector: "node[kind = 'tag']", style: { "background-color": "#e39b1b", shape: "ellipse", width: 12, height: 12 } },
        { selector: "node:selected", style: { "border-width": 3, "border-color": "#1d2430" } },
        { selector: "edge", style: { width: 1, "line-color": "#c5ccd8" } },
      ],
      layout: { name: "cose", animate: false, randomize: true, nodeRepulsion: () => 8000, idealEdgeLength: () => 60 },
    });
    cy.on("tap", "node", (event) => {
      const data = event.target.data();
      if (data.kind === "tag") showTag(data.label); else showFile(data.label);
    });
    state.cy = cy;
    window.__beelineGraph = {
      nodes: graph.nodes.map((n) => ({ id: n.id, kind: n.kind, label: n.label })),
      edges: graph.edges.map((e) => ({ file: e.file, tag: e.tag, source: e.source })),
      truncated: graph.truncated,
      drawn: cy.nodes().map((n) => n.id()),
      // Where a node is on the screen, for clicking it (tests, keyboard helpers).
      position: (id) => {
        const node = cy.getElementById(id);
        if (node.empty()) return null;
        const box = $("graph").getBoundingClientRect();
        const p = node.renderedPosition();
        return { x: box.left + p.x, y: box.top + p.y };
      },
    };
  }

  // ---- one file ----
  async function showFile(name) {
    let details;
    try {
      details = await api("/api/file?name=" + q(name));
    } catch (error) {
      say(name + ": " + error.message);
      return;
    }
    state.selected = details.name;
    window.__beeline.details = { name: details.name, tags: details.tags.map((t) => t.tag), related: details.related.map((r) => r.name) };
    $("details").hidden = false;
    $("details-name").textContent = details.name;
    $("details-size").textContent = bytes(details.size_bytes) + " (" + details.size_bytes + " bytes)";
    $("details-created").textContent = new Date(details.created_unix_ms).toISOString();
    $("details-blake3").textContent = details.blake3;
    $("details-download").href = "/api/download?name=" + q(details.name);
    const tags = $("details-tags");
    tags.replaceChildren();
    for (const tag of details.tags) {
      const item = el("li");
      const remove = el("button", "\u00d7", "tag-remove");
      remove.type = "button";
      remove.title = "remove the tag " + tag.tag;
      remove.addEventListener("click", () => editTags(details.name, [], [tag.tag]));
      item.append(tagChip(tag.tag, tag.source), remove);
      tags.append(item);
    }
    const related = $("related");
    related.replaceChildren();
    for (const other of details.related) {
      const item = el("li");
      const link = el("button", other.name, "name");
      link.type = "button";
      link.addEventListener("click", () => showFile(other.name));
      item.append(link, el("span", " shares " + other.shared.join(", ")));
      related.append(item);
    }
    if (details.related.length === 0) related.append(el("li", "none"));
    if (state.cy) {
      state.cy.nodes().unselect();
      state.cy.getElementById("file:" + details.name).select();
    }
    await showPreview(details);
  }

  async function showPreview(details) {
    const box = $("preview");
    box.replaceChildren();
    if (details.preview === "none") { box.append(el("p", "too large to preview")); return; }
    const url = "/api/preview?name=" + q(details.name);
    try {
      const response = await fetch(url, { credentials: "same-origin" });
      if (!response.ok) {
        const text = await response.text();
        let message = text;
        try { message = JSON.parse(text).error; } catch (_) { /* plain text */ }
        box.append(el("p", "no preview: " + String(message).slice(0, 200)));
        return;
      }
      const type = response.headers.get("content-type") || "";
      if (type.startsWith("image/")) {
        const img = el("img");
        img.alt = details.name;
        img.src = URL.createObjectURL(await response.blob());
        box.append(img);
      } else {
        box.append(el("pre", (await response.text()).slice(0, 100000)));
      }
    } catch (error) {
      box.append(el("p", "no preview: " + error.message));
    }
  }

  async function editTags(name, add, remove) {
    try {
      await api("/api/tags", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ name, add, remove }),
      });
      say("");
    } catch (error) {
      say("tags: " + error.message);
    }
    await search(state.query);
    await showFile(name);
  }

  async function removeFile(name) {
    if (!window.confirm("Delete " + name + "?")) return;
    try {
      await api("/api/file?name=" + q(name), { method: "DELETE" });
      $("details").hidden = true;
      window.__beeline.details = null;
    } catch (error) {
      say("delete: " + error.message);
    }
    await search(state.query);
    loadCluster();
  }

  // ---- uploads ----
  function upload(file) {
    return new Promise((resolve) => {
      const item = el("li");
      const label = el("span", file.name + " ");
      const bar = el("progress");
      bar.max = file.size || 1;
      bar.value = 0;
      item.append(label, bar);
      $("uploads").append(item);
      const xhr = new XMLHttpRequest();
      xhr.open("PUT", "/api/upload?name=" + q(file.name));
      xhr.setRequestHeader("X-Beeline", "1");
      xhr.setRequestHeader("Content-Type", "application/octet-stream");
      xhr.upload.onprogress = (event) => { if (event.lengthComputable) bar.value = event.loaded; };
      xhr.onload = () => {
        if (xhr.status === 201) {
          bar.value = bar.max;
          label.textContent = file.name + " stored ";
        } else {
          let message = xhr.responseText;
          try { message = JSON.parse(xhr.responseText).error; } catch (_) { /* plain text */ }
          label.textContent = file.name + ": " + message + " ";
          say("upload: " + message);
        }
        resolve();
      };
      xhr.onerror = () => { label.textContent = file.name + ": the connection failed "; resolve(); };
      xhr.send(file);
    });
  }

  async function uploadAll(files) {
    // One at a time: the server takes only a few uploads at once.
    for (const file of files) await upload(file);
    await search(state.query);
    loadCluster();
  }

  function wire() {
    const drop = $("drop");
    drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (event) => {
      event.preventDefault();
      drop.classList.remove("over");
      uploadAll(Array.from(event.dataTransfer.files));
    });
    $("file-input").addEventListener("change", (event) => {
      uploadAll(Array.from(event.target.files));
      event.target.value = "";
    });
    const input = $("search");
    input.addEventListener("input", complete);
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") { $("suggestions").replaceChildren(); search(input.value.trim(), $("name-filter").value.trim()); }
    });
    $("name-filter").addEventListener("keydown", (event) => {
      if (event.key === "Enter") search($("search").value.trim(), $("name-filter").value.trim());
    });
    input.addEventListener("blur", () => $("suggestions").replaceChildren());
    $("tag-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const tag = $("tag-input").value.trim();
      if (tag && state.selected) {
        $("tag-input").value = "";
        editTags(state.selected, [tag], []);
      }
    });
    $("details-delete").addEventListener("click", () => { if (state.selected) removeFile(state.selected); });
  }

  async function start() {
    wire();
    await Promise.all([loadCluster(), search("", "")]);
    window.__beeline.ready = true;
    setInterval(loadCluster, 5000);
  }

  start();
})();
