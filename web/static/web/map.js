// The owners' map (templates/web/map.html): my trackers' latest positions with accuracy
// circles, my fences, and a day's track of the tracker I select. Everything comes from the
// REST API with the page's session; positions and fences reload every refreshSeconds without
// touching the zoom, the selection or the list's scroll position.
(function () {
  "use strict";

  const config = JSON.parse(document.getElementById("map-config").textContent);
  const MAX_PAGES = 50; // pages of a list followed through `next` (1000 rows each at most)
  const PAGE_SIZE = 1000;
  const COLOURS = { position: "#1565c0", selected: "#e65100", track: "#c2185b", fence: "#2e7d32" };

  const el = {
    status: document.getElementById("map-status"),
    list: document.getElementById("tracker-list"),
    empty: document.getElementById("empty-state"),
    date: document.getElementById("track-date"),
    filter: document.getElementById("tracker-filter"),
    summary: document.getElementById("track-summary"),
  };

  // --- state ------------------------------------------------------------------------------
  const trackers = new Map(); // id -> {id, name, position: properties of `latest` | null}
  const drawn = new Map(); // id -> {marker, circle}
  let selected = null; // tracker id
  let trackRequest = 0; // the newest track request; older answers are dropped
  let fitted = false; // the first load fits the map to what there is; later ones never move it

  // --- the map ----------------------------------------------------------------------------
  const map = L.map("map", { worldCopyJump: true }).setView([20, 0], 2);
  if (config.tileUrl) {
    L.tileLayer(config.tileUrl, { maxZoom: 19, attribution: config.tileAttribution }).addTo(map);
  }
  L.control.scale({ imperial: false }).addTo(map);
  const fenceLayer = L.featureGroup().addTo(map);
  const accuracyLayer = L.featureGroup().addTo(map);
  const trackLayer = L.featureGroup().addTo(map);
  const positionLayer = L.featureGroup().addTo(map);
  window.trackerMap = map; // for the browser's console (and the browser tests)

  // --- helpers ----------------------------------------------------------------------------
  function pad(n) {
    return String(n).padStart(2, "0");
  }

  function localDate(d) {
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  }

  // Local midnight of y-m-d as ISO 8601 with this browser's offset on that day.
  function localMidnight(y, m, d) {
    const t = new Date(y, m - 1, d); // a midnight that DST skips becomes 01:00: still right
    const offset = -t.getTimezoneOffset();
    const sign = offset >= 0 ? "+" : "-";
    const abs = Math.abs(offset);
    return (
      `${localDate(t)}T${pad(t.getHours())}:${pad(t.getMinutes())}:00` +
      `${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`
    );
  }

  function dayBounds(value) {
    const [y, m, d] = value.split("-").map(Number);
    return [localMidnight(y, m, d), localMidnight(y, m, d + 1)];
  }

  function ago(iso) {
    if (!iso) return "never";
    const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (seconds < 60) return "just now";
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
    if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
    return `${Math.floor(seconds / 86400)} d ago`;
  }

  function timeText(iso) {
    return new Date(iso).toLocaleString();
  }

  function node(tag, className, text) {
    const element = document.createElement(tag);
    if (className) element.className = className;
    if (text !== undefined && text !== null) element.textContent = text;
    return element;
  }

  function say(text, failed) {
    el.status.textContent = text;
    el.status.classList.toggle("failed", Boolean(failed));
  }

  // --- the API ----------------------------------------------------------------------------
  async function getJSON(url) {
    const response = await fetch(url, {
      credentials: "same-origin",
      headers: { Accept: "application/json, application/geo+json" },
    });
    if (response.status === 401 || response.status === 403) {
      // The session is over: the login page brings the owner back here.
      window.location.assign(`/accounts/login/?next=${encodeURIComponent("/map/")}`);
      throw new Error("logged out");
    }
    if (!response.ok) throw new Error(`HTTP ${response.status} from ${url.split("?")[0]}`);
    return response.json();
  }

  function withQuery(url, params) {
    const query = new URLSearchParams(params).toString();
    return query ? `${url}${url.includes("?") ? "&" : "?"}${query}` : url;
  }

  // A GeoJSON FeatureCollection, following `next` if the API pages it.
  async function features(url) {
    let all = [];
    let next = url;
    for (let page = 0; next && page < MAX_PAGES; page++) {
      const body = await getJSON(next);
      all = all.concat(body.features || []);
      next = body.next || null;
    }
    return all;
  }

  // An enveloped list: {"data": {"results": [...], "next": url|null}, "error": null}.
  async function results(url) {
    let all = [];
    let next = url;
    for (let page = 0; next && page < MAX_PAGES; page++) {
      const body = await getJSON(next);
      all = all.concat(body.data.results);
      next = body.data.next;
    }
    return all;
  }

  // --- positions --------------------------------------------------------------------------
  function fenceNames(position) {
    return (position.fences || []).map((f) => (typeof f === "object" ? f.name : String(f)));
  }

  function popupContent(tracker) {
    const p = tracker.position;
    const box = node("div", "popup");
    box.append(node("strong", null, tracker.name));
    box.append(node("div", null, `${timeText(p.timestamp)} (${ago(p.timestamp)})`));
    box.append(node("div", null, p.address || "no address yet"));
    box.append(node("div", "quiet", `accuracy ± ${p.accuracy} m`));
    const fences = fenceNames(p);
    if (fences.length) box.append(node("div", null, `inside: ${fences.join(", ")}`));
    return box;
  }

  function draw(tracker) {
    const p = tracker.position;
    let shapes = drawn.get(tracker.id);
    if (!p) {
      if (shapes) {
        accuracyLayer.removeLayer(shapes.circle);
        positionLayer.removeLayer(shapes.marker);
        drawn.delete(tracker.id);
      }
      return;
    }
    const where = [p.latitude, p.longitude];
    if (!shapes) {
      shapes = {
        circle: L.circle(where, {
          radius: p.accuracy || 0,
          className: "accuracy-circle",
          color: COLOURS.position,
          weight: 1,
          fillOpacity: 0.12,
          interactive: false,
        }),
        marker: L.circleMarker(where, {
          radius: 7,
          className: "tracker-marker",
          color: "#fff",
          weight: 2,
          fillColor: COLOURS.position,
          fillOpacity: 1,
        }),
      };
      shapes.marker.bindPopup(() => popupContent(trackers.get(tracker.id)));
      shapes.marker.bindTooltip(tracker.name, { direction: "top", offset: [0, -6] });
      shapes.marker.on("click", () => select(tracker.id, false));
      accuracyLayer.addLayer(shapes.circle);
      positionLayer.addLayer(shapes.marker);
      drawn.set(tracker.id, shapes);
    } else {
      // An open popup that moves or changes pans the map to show it: a refresh must not.
      const popup = shapes.marker.getPopup();
      popup.options.autoPan = false;
      shapes.circle.setLatLng(where).setRadius(p.accuracy || 0);
      shapes.marker.setLatLng(where).setTooltipContent(tracker.name);
      if (shapes.marker.isPopupOpen()) shapes.marker.setPopupContent(popupContent(tracker));
      popup.options.autoPan = true;
    }
    const isSelected = tracker.id === selected;
    shapes.marker.setStyle({ fillColor: isSelected ? COLOURS.selected : COLOURS.position });
    shapes.circle.setStyle({ color: isSelected ? COLOURS.selected : COLOURS.position });
    if (isSelected) shapes.marker.bringToFront();
  }

  // --- the side panel ---------------------------------------------------------------------
  function listItem(tracker) {
    const item = node("li", "tracker");
    item.dataset.tracker = tracker.id;
    const button = node("button", "tracker-button");
    button.type = "button";
    button.append(node("span", "tracker-name", tracker.name));
    const p = tracker.position;
    button.append(node("span", "tracker-seen", p ? `last seen ${ago(p.timestamp)}` : "no position yet"));
    if (p) {
      button.append(node("span", "tracker-address", p.address || "no address yet"));
      const fences = fenceNames(p);
      if (fences.length) button.append(node("span", "tracker-fences", `inside ${fences.join(", ")}`));
    }
    button.addEventListener("click", () => select(tracker.id, true));
    item.append(button);
    item.classList.toggle("selected", tracker.id === selected);
    item.hidden = !matchesFilter(tracker);
    return item;
  }

  function matchesFilter(tracker) {
    const text = el.filter.value.trim().toLowerCase();
    return !text || tracker.name.toLowerCase().includes(text);
  }

  function renderList() {
    const sorted = [...trackers.values()].sort((a, b) => a.name.localeCompare(b.name));
    el.list.replaceChildren(...sorted.map(listItem)); // the list keeps its scroll position
    el.empty.hidden = trackers.size > 0;
  }

  // --- selection and the day's track ------------------------------------------------------
  function select(id, zoom) {
    selected = id;
    trackers.forEach(draw);
    for (const item of el.list.children) {
      item.classList.toggle("selected", Number(item.dataset.tracker) === id);
    }
    const tracker = trackers.get(id);
    if (zoom && tracker && tracker.position) {
      map.setView([tracker.position.latitude, tracker.position.longitude], Math.max(map.getZoom(), 15));
      drawn.get(id).marker.openPopup();
    }
    loadTrack(zoom);
  }

  async function loadTrack(fit) {
    if (selected === null) return;
    const id = selected;
    const request = ++trackRequest;
    const [startsAt, endsAt] = dayBounds(el.date.value);
    const url = withQuery(config.api.locations.replace("{id}", id), {
      starts_at: startsAt,
      ends_at: endsAt,
      format: "geojson", // the whole day in one answer (exports are not paged)
    });
    let points;
    try {
      points = await features(url);
    } catch (error) {
      say(`Track failed: ${error.message}`, true);
      return;
    }
    if (request !== trackRequest) return; // another tracker or day was chosen meanwhile
    points = points.filter((f) => f.geometry && f.geometry.type === "Point");
    points.sort((a, b) => Date.parse(a.properties.timestamp) - Date.parse(b.properties.timestamp));
    trackLayer.clearLayers();
    const line = points.map((f) => [f.geometry.coordinates[1], f.geometry.coordinates[0]]);
    if (line.length > 1) {
      L.polyline(line, { className: "track-line", color: COLOURS.track, weight: 3, opacity: 0.8 })
        .addTo(trackLayer);
    }
    points.forEach((f, i) => {
      L.circleMarker(line[i], {
        radius: 3.5,
        className: "track-point",
        color: COLOURS.track,
        weight: 1,
        fillColor: "#fff",
        fillOpacity: 1,
      })
        .bindTooltip(`${timeText(f.properties.timestamp)} ± ${f.properties.accuracy} m`)
        .addTo(trackLayer);
    });
    const tracker = trackers.get(id);
    el.summary.hidden = false;
    el.summary.textContent = points.length
      ? `${tracker ? tracker.name : "Tracker"} on ${el.date.value}: ${points.length} report(s), ` +
        `${new Date(points[0].properties.timestamp).toLocaleTimeString()} to ` +
        `${new Date(points[points.length - 1].properties.timestamp).toLocaleTimeString()}`
      : `${tracker ? tracker.name : "Tracker"}: no report on ${el.date.value}`;
    if (fit && line.length) map.fitBounds(trackLayer.getBounds(), { padding: [40, 40], maxZoom: 17 });
  }

  // --- loading ----------------------------------------------------------------------------
  async function loadFences() {
    const shapes = await features(withQuery(config.api.geofences, { format: "geojson" }));
    fenceLayer.clearLayers();
    L.geoJSON(shapes, {
      style: () => ({ className: "fence-shape", color: COLOURS.fence, weight: 2, dashArray: "6 4", fillOpacity: 0.08 }),
      onEachFeature: (feature, layer) => layer.bindTooltip(feature.properties.name || "fence"),
    }).addTo(fenceLayer);
  }

  async function loadPositions() {
    const [list, latest] = await Promise.all([
      results(withQuery(config.api.trackers, { limit: PAGE_SIZE })),
      features(withQuery(config.api.latest, { format: "geojson" })),
    ]);
    const positions = new Map(latest.map((f) => [f.properties.tracker, f.properties]));
    const seen = new Set();
    for (const t of list) {
      seen.add(t.id);
      trackers.set(t.id, { id: t.id, name: t.name, position: positions.get(t.id) || null });
    }
    for (const [id, p] of positions) {
      // A tracker beyond the list's pages still shows with its position.
      if (!seen.has(id)) trackers.set(id, { id, name: p.tracker_name || `#${id}`, position: p });
      seen.add(id);
    }
    for (const id of [...trackers.keys()]) {
      if (!seen.has(id)) {
        trackers.get(id).position = null;
        draw(trackers.get(id));
        trackers.delete(id);
      }
    }
    trackers.forEach(draw);
    renderList();
  }

  async function refresh() {
    try {
      await Promise.all([loadPositions(), loadFences()]);
      if (!fitted) {
        fitted = true;
        const bounds = L.featureGroup([positionLayer, fenceLayer]).getBounds();
        if (bounds.isValid()) map.fitBounds(bounds, { padding: [30, 30], maxZoom: 16 });
      } else if (selected !== null && el.date.value === localDate(new Date())) {
        loadTrack(false); // today's track grows with the new reports
      }
      const located = [...trackers.values()].filter((t) => t.position).length;
      say(`${trackers.size} tracker(s), ${located} with a position · updated ${new Date().toLocaleTimeString()}`);
    } catch (error) {
      say(`Refresh failed at ${new Date().toLocaleTimeString()} (${error.message}); showing older data.`, true);
    }
  }

  el.date.value = localDate(new Date());
  el.date.addEventListener("change", () => loadTrack(true));
  el.filter.addEventListener("input", () => {
    for (const item of el.list.children) {
      item.hidden = !matchesFilter(trackers.get(Number(item.dataset.tracker)));
    }
  });
  refresh();
  window.setInterval(refresh, Math.max(2, Number(config.refreshSeconds) || 30) * 1000);
})();
