// clay-search map: a Streamlit component (protocol v1, no CDN) drawing chip footprints over
// offline imagery (per-source overviews, chip thumbnails at high zoom, an optional tile basemap),
// with a toolbar to pick chips, draw a box or a polygon, and send the current view.
//
// Python side: clay_search/app/map_component.py. Values sent back (one JSON object, `seq`
// grows with every event so a repeated action is still new):
//   {event: "click", chip_id, lonlat, seq}            a chip picked in "Pick" mode
//   {event: "draw", geometry: GeoJSON Polygon, seq}  a box or polygon finished
//   {event: "view", bounds: [w, s, e, n], zoom, seq} "Use view" pressed
//   {event: "clear", seq}                             "Clear drawing" pressed
// (each also carries `nonce`, new for every page load of the map)
// When the first frame is drawn, <body> gets data-ready="1" (tests wait for it), and
// data-overviews-drawn counts the overview images loaded and drawn so far.
import { Deck, MapView, WebMercatorViewport } from "@deck.gl/core";
import { BitmapLayer, PathLayer, PolygonLayer, ScatterplotLayer } from "@deck.gl/layers";

const state = {
  args: null,
  deck: null,
  view: null, // current viewState
  fitKey: null, // the view is refitted only when the app's fit_key changes
  mode: "pick", // "pick" | "box" | "polygon"
  draft: [], // polygon vertices being drawn, or [corner, corner] of a box
  drawn: null, // last finished ring (closed), shown until cleared
  seq: 0,
  nonce: Math.random().toString(36).slice(2), // tells a reloaded map's events from old ones
  ready: false,
};

function send(type, extra) {
  window.parent.postMessage({ isStreamlitMessage: true, apiVersion: 1, type, ...extra }, "*");
}

function emit(value) {
  state.seq += 1;
  send("streamlit:setComponentValue", { value: { ...value, seq: state.seq, nonce: state.nonce }, dataType: "json" });
}

function fitView(bounds, width, height) {
  if (!bounds) return { longitude: 0, latitude: 20, zoom: 1, pitch: 0, bearing: 0 };
  const [w, s, e, n] = bounds;
  if (e - w < 1e-6 && n - s < 1e-6) {
    return { longitude: w, latitude: s, zoom: 14, pitch: 0, bearing: 0 };
  }
  const vp = new WebMercatorViewport({ width, height });
  const fitted = vp.fitBounds([[w, s], [e, n]], { padding: 24, maxZoom: 17 });
  return {
    longitude: fitted.longitude,
    latitude: fitted.latitude,
    zoom: Math.max(0, fitted.zoom),
    pitch: 0,
    bearing: 0,
  };
}

function viewBounds() {
  const el = document.getElementById("map");
  const vp = new WebMercatorViewport({ ...state.view, width: el.clientWidth, height: el.clientHeight });
  const [w, n] = vp.unproject([0, 0]);
  const [e, s] = vp.unproject([el.clientWidth, el.clientHeight]);
  const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
  return [clamp(w, -180, 180), clamp(s, -85, 85), clamp(e, -180, 180), clamp(n, -85, 85)];
}

// XYZ tiles covering the view (an online basemap, only when the app gives a URL template).
function tiles(template) {
  if (!template) return [];
  const z = Math.max(0, Math.min(19, Math.round(state.view.zoom)));
  const [w, s, e, n] = viewBounds();
  const x = (lon) => Math.floor(((lon + 180) / 360) * 2 ** z);
  const y = (lat) => {
    const r = (lat * Math.PI) / 180;
    return Math.floor(((1 - Math.log(Math.tan(r) + 1 / Math.cos(r)) / Math.PI) / 2) * 2 ** z);
  };
  const lon = (tx) => (tx / 2 ** z) * 360 - 180;
  const lat = (ty) => (Math.atan(Math.sinh(Math.PI * (1 - (2 * ty) / 2 ** z))) * 180) / Math.PI;
  const out = [];
  const maxT = 2 ** z - 1;
  for (let tx = Math.max(0, x(w)); tx <= Math.min(maxT, x(e)) && out.length < 64; tx++) {
    for (let ty = Math.max(0, y(n)); ty <= Math.min(maxT, y(s)) && out.length < 64; ty++) {
      const url = template.replace("{z}", z).replace("{x}", tx).replace("{y}", ty);
      out.push({ url, bounds: [lon(tx), lat(ty + 1), lon(tx + 1), lat(ty)], id: `${z}/${tx}/${ty}` });
    }
  }
  return out;
}

function metresPerPixel() {
  return (156543.03 * Math.cos((state.view.latitude * Math.PI) / 180)) / 2 ** state.view.zoom;
}

function layers() {
  const a = state.args;
  const out = [];
  for (const t of tiles(a.basemap_url)) {
    out.push(new BitmapLayer({ id: `tile-${t.id}`, image: t.url, bounds: t.bounds }));
  }
  (a.overviews || []).forEach((o, i) => {
    out.push(new BitmapLayer({ id: `overview-${i}`, image: o.image, bounds: o.bounds, opacity: 1 }));
  });
  // chip thumbnails in place once a chip is at least ~24 px wide on screen
  const mpp = metresPerPixel();
  for (const t of a.thumbnails || []) {
    const widthM = (t.bounds[2] - t.bounds[0]) * 111320 * Math.cos((t.bounds[1] * Math.PI) / 180);
    if (widthM / mpp >= 24) {
      out.push(new BitmapLayer({ id: `thumb-${t.chip_id}`, image: t.image, bounds: t.bounds }));
    }
  }
  if (a.grid && a.grid.length) {
    out.push(
      new PathLayer({
        id: "grid",
        data: a.grid,
        getPath: (d) => d,
        getColor: [160, 160, 160, 90],
        widthMinPixels: 1,
      })
    );
  }
  // chips narrower than a few pixels are also drawn as dots, so they can be seen and clicked.
  // Outlines are a layer of their own, of the larger chips only: at a large store's first view
  // every chip is a dot and drawing their sub-pixel outlines was most of the map's first frame
  // with software WebGL (docs/benchmarks.md). The fill layer (what clicks are picked from)
  // keeps every chip and the same props whatever the zoom.
  const chips = a.chips || [];
  const small = [];
  const large = [];
  for (const d of chips) (chipPixels(d) < 10 ? small : large).push(d);
  out.push(
    new PolygonLayer({
      id: "chips",
      data: chips,
      getPolygon: (d) => d.polygon,
      getFillColor: (d) => d.fill,
      stroked: false,
      filled: true,
      pickable: state.mode === "pick",
      autoHighlight: true,
    })
  );
  if (large.length) {
    out.push(
      new PathLayer({
        id: "chip-outlines",
        data: large,
        getPath: (d) => d.polygon,
        getColor: (d) => d.line,
        getWidth: (d) => d.line_px,
        widthUnits: "pixels",
        widthMinPixels: 1,
      })
    );
  }
  if (small.length) {
    out.push(
      new ScatterplotLayer({
        id: "chip-dots",
        data: small,
        getPosition: (d) => centre(d),
        getFillColor: (d) => [d.fill[0], d.fill[1], d.fill[2], 230],
        getLineColor: (d) => d.line,
        getLineWidth: (d) => d.line_px,
        lineWidthUnits: "pixels",
        stroked: true,
        radiusUnits: "pixels",
        getRadius: 4,
        pickable: state.mode === "pick",
        autoHighlight: true,
        updateTriggers: { getPosition: a.fit_key },
      })
    );
  }
  const ring = state.drawn || (state.draft.length ? draftRing() : null);
  if (ring) {
    out.push(
      new PolygonLayer({
        id: "drawn",
        data: [{ polygon: ring }],
        getPolygon: (d) => d.polygon,
        getFillColor: [255, 140, 0, 40],
        getLineColor: [255, 140, 0, 255],
        getLineWidth: 2,
        lineWidthUnits: "pixels",
        stroked: true,
        filled: true,
      })
    );
  }
  if (state.mode === "polygon" && state.draft.length) {
    out.push(
      new ScatterplotLayer({
        id: "vertices",
        data: state.draft,
        getPosition: (d) => d,
        getFillColor: [255, 140, 0, 255],
        radiusUnits: "pixels",
        getRadius: 4,
      })
    );
  }
  return out;
}

function centre(d) {
  if (!d._c) {
    let x = 0;
    let y = 0;
    const n = Math.max(1, d.polygon.length - 1);
    for (let i = 0; i < n; i++) {
      x += d.polygon[i][0];
      y += d.polygon[i][1];
    }
    d._c = [x / n, y / n];
  }
  return d._c;
}

function chipPixels(d) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const p of d.polygon) {
    lo = Math.min(lo, p[0]);
    hi = Math.max(hi, p[0]);
  }
  const c = centre(d);
  return ((hi - lo) * 111320 * Math.cos((c[1] * Math.PI) / 180)) / metresPerPixel();
}

function draftRing() {
  if (state.mode === "box" && state.draft.length === 2) {
    const [[x0, y0], [x1, y1]] = state.draft;
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]];
  }
  return state.draft.length >= 2 ? [...state.draft, state.draft[0]] : null;
}

function redraw() {
  if (state.deck) state.deck.setProps({ layers: layers() });
  const st = document.getElementById("status");
  const hints = {
    pick: "Click a chip to label it (the action is chosen above the map).",
    box: "Drag a box on the map.",
    polygon: "Click the corners; double-click (or click the first corner) to finish.",
  };
  st.textContent = hints[state.mode];
  for (const b of document.querySelectorAll("[data-mode]")) {
    b.classList.toggle("on", b.dataset.mode === state.mode);
  }
}

function setMode(mode) {
  state.mode = mode;
  state.draft = [];
  state.deck.setProps({
    controller: { dragPan: mode !== "box", doubleClickZoom: mode !== "polygon" },
  });
  redraw();
}

function finishDrawing(ring) {
  state.drawn = ring;
  state.draft = [];
  redraw();
  emit({ event: "draw", geometry: { type: "Polygon", coordinates: [ring] } });
}

function onClick(info, event) {
  if (!info.coordinate) return;
  const c = [info.coordinate[0], info.coordinate[1]];
  if (state.mode === "pick") {
    if (info.layer && (info.layer.id === "chips" || info.layer.id === "chip-dots") && info.object) {
      emit({ event: "click", chip_id: info.object.chip_id, lonlat: c });
    }
    return;
  }
  if (state.mode !== "polygon") return;
  const first = state.draft[0];
  const near =
    first &&
    state.draft.length >= 3 &&
    Math.hypot(info.x - info.viewport.project(first)[0], info.y - info.viewport.project(first)[1]) < 8;
  const double = event && event.srcEvent && event.srcEvent.detail >= 2;
  if (near || (double && state.draft.length >= 3)) {
    finishDrawing([...state.draft, state.draft[0]]);
    return;
  }
  state.drawn = null;
  state.draft.push(c);
  redraw();
}

function onDragStart(info) {
  if (state.mode !== "box" || !info.coordinate) return;
  state.drawn = null;
  state.draft = [info.coordinate.slice(0, 2), info.coordinate.slice(0, 2)];
  redraw();
}

function onDrag(info) {
  if (state.mode !== "box" || state.draft.length !== 2 || !info.coordinate) return;
  state.draft[1] = info.coordinate.slice(0, 2);
  redraw();
}

function onDragEnd() {
  if (state.mode !== "box" || state.draft.length !== 2) return;
  const [[x0, y0], [x1, y1]] = state.draft;
  if (Math.abs(x1 - x0) < 1e-9 || Math.abs(y1 - y0) < 1e-9) {
    state.draft = [];
    redraw();
    return;
  }
  const [w, e] = [Math.min(x0, x1), Math.max(x0, x1)];
  const [s, n] = [Math.min(y0, y1), Math.max(y0, y1)];
  finishDrawing([[w, s], [e, s], [e, n], [w, n], [w, s]]);
}

function toolbar() {
  const bar = document.getElementById("toolbar");
  const button = (text, title, onclick, mode) => {
    const b = document.createElement("button");
    b.textContent = text;
    b.title = title;
    if (mode) b.dataset.mode = mode;
    b.onclick = onclick;
    bar.appendChild(b);
  };
  button("Pick", "Click chips on the map", () => setMode("pick"), "pick");
  button("Box", "Drag a box: filter or label the chips inside", () => setMode("box"), "box");
  button("Polygon", "Click a polygon: filter or label the chips inside", () => setMode("polygon"), "polygon");
  button("Use view", "Send the current map view as the area filter", () => {
    emit({ event: "view", bounds: viewBounds(), zoom: state.view.zoom });
  });
  button("Clear drawing", "Remove the drawn shape", () => {
    state.drawn = null;
    state.draft = [];
    redraw();
    emit({ event: "clear" });
  });
  const st = document.createElement("span");
  st.id = "status";
  bar.appendChild(st);
}

// <body data-overviews-drawn="N">: N overview images are loaded and drawn in the last frame
// (the latency benchmark and tests wait for it to equal data-overviews).
function markOverviewsDrawn() {
  const layers = (state.deck && state.deck.props.layers) || [];
  const ovs = layers.filter((l) => l.id.startsWith("overview-"));
  const drawn = ovs.filter((l) => l.isLoaded).length;
  if (document.body.dataset.overviewsDrawn !== String(drawn)) {
    document.body.dataset.overviewsDrawn = String(drawn);
  }
}

function render(args) {
  state.args = args;
  const el = document.getElementById("map");
  el.style.height = `${args.height}px`;
  if (!state.deck) {
    toolbar();
    state.view = fitView(args.bounds, el.clientWidth || 800, args.height);
    state.fitKey = args.fit_key;
    state.deck = new Deck({
      parent: el,
      views: new MapView({ repeat: false }),
      initialViewState: state.view,
      controller: { dragPan: true, doubleClickZoom: true },
      layers: [],
      getTooltip: ({ object, layer }) =>
        object && layer && (layer.id === "chips" || layer.id === "chip-dots") ? object.tip : null,
      onViewStateChange: ({ viewState }) => {
        state.view = viewState;
        redraw();
        return viewState;
      },
      onClick,
      onDragStart,
      onDrag,
      onDragEnd,
      onAfterRender: () => {
        if (!state.ready) {
          state.ready = true;
          document.body.dataset.ready = "1";
        }
        markOverviewsDrawn();
      },
      getCursor: ({ isHovering, isDragging }) =>
        state.mode !== "pick" ? "crosshair" : isDragging ? "grabbing" : isHovering ? "pointer" : "grab",
    });
  } else if (args.fit_key !== state.fitKey) {
    state.fitKey = args.fit_key;
    state.view = fitView(args.bounds, el.clientWidth, args.height);
    state.deck.setProps({ initialViewState: { ...state.view } });
  }
  if (!args.drawn) state.drawn = null; // the app forgot the drawing (cleared, or a new session)
  else if (!state.draft.length) state.drawn = args.drawn;
  document.body.dataset.chips = String((args.chips || []).length);
  document.body.dataset.overviews = String((args.overviews || []).length);
  redraw();
  send("streamlit:setFrameHeight", { height: args.height + 40 });
}

window.addEventListener("message", (event) => {
  const msg = event.data;
  if (msg && msg.type === "streamlit:render") render(msg.args);
});
send("streamlit:componentReady", {});
