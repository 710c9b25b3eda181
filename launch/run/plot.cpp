// plot.cpp: reading run folders' metrics.jsonl and drawing their loss curves with cairo
// (plot.h). cairo does all the drawing and the text; this file only lays out the panels,
// picks tick values (1-2-5 steps) and maps data to the page. Without cairo at configure time
// the reading stays and the drawing is a one-line error, so `loom plot` says why it cannot.
#include "launch/run/plot.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numbers>
#include <utility>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "engine/io/atomic_file.h"
#include "engine/io/json_guard.h"

#ifdef LOOM_HAVE_CAIRO
#include <cairo-svg.h>
#include <cairo.h>
#endif

namespace loom {

namespace fs = std::filesystem;

namespace {

// A number of the line, or NaN when it has none (absent, null, not finite).
double number_at(const nlohmann::json& j, const char* key) {
  const auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return CurvePoint::kNone;
  const double v = it->get<double>();
  return std::isfinite(v) ? v : CurvePoint::kNone;
}

// The legend's name of a run folder: its last component ("runs/a/" -> "a").
std::string folder_name(const std::string& dir) {
  fs::path p = fs::path(dir).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();
  const std::string n = p.filename().string();
  return n.empty() || n == "." || n == ".." ? dir : n;
}

}  // namespace

RunCurves read_run_curves(const std::string& dir) {
  std::error_code ec;
  LOOM_USER_CHECK(fs::is_directory(dir, ec), dir, ": no such run folder");
  const std::string path = (fs::path(dir) / "metrics.jsonl").string();
  LOOM_USER_CHECK(fs::is_regular_file(path, ec), path, ": not found (is ", dir, " a run folder?)");
  std::ifstream f(path, std::ios::binary);
  LOOM_USER_CHECK(f, path, ": cannot read: ", std::strerror(errno));
  RunCurves r{.dir = dir, .name = folder_name(dir), .points = {}};
  std::vector<char> buf(kMaxMetricsLine + 1);
  size_t line_no = 0;
  bool any = false;
  while (f.getline(buf.data(), static_cast<std::streamsize>(buf.size()))) {
    ++line_no;
    LOOM_USER_CHECK(line_no <= kMaxMetricsLines, path, ": more than ", kMaxMetricsLines, " lines");
    const std::string_view line(buf.data(), static_cast<size_t>(f.gcount()) - (f.eof() ? 0 : 1));
    check_json_depth(line, path, "line " + std::to_string(line_no));
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) continue;
    const auto step = j.find("step");
    if (step == j.end() || !step->is_number_integer()) continue;
    CurvePoint p;
    p.step = step->get<double>();
    p.tokens = number_at(j, "tokens");
    p.loss = number_at(j, "loss");
    p.val_loss = number_at(j, "val_loss");
    p.lr = number_at(j, "lr");
    any = any || !std::isnan(p.loss) || !std::isnan(p.val_loss);
    r.points.push_back(p);
  }
  LOOM_USER_CHECK(!f.bad(), path, ": read error");
  // getline stops short of the end only on a line that does not fit the buffer.
  LOOM_USER_CHECK(f.eof(), path, ": line ", line_no + 1, " is longer than ", kMaxMetricsLine, " bytes");
  LOOM_USER_CHECK(any, path, ": no line with a number for loss or val_loss (nothing to plot)");
  return r;
}

#ifdef LOOM_HAVE_CAIRO

namespace {

struct Rgb {
  double r, g, b;
};
// Tableau's ten colours (matplotlib's default cycle): distinct, and readable on white.
constexpr Rgb kPalette[] = {{0.122, 0.467, 0.706}, {1.000, 0.498, 0.055}, {0.173, 0.627, 0.173},
                            {0.839, 0.153, 0.157}, {0.580, 0.404, 0.741}, {0.549, 0.337, 0.294},
                            {0.890, 0.467, 0.761}, {0.498, 0.498, 0.498}, {0.737, 0.741, 0.133},
                            {0.090, 0.745, 0.812}};

// Valid UTF-8 without control characters, at most 48 code points (cairo refuses invalid
// UTF-8 and then draws nothing more; XML forbids control characters). Anything else is '?'.
std::string printable(const std::string& s) {
  std::string out;
  int points = 0;
  for (size_t i = 0; i < s.size() && points < 48; ++points) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    bool ok = len > 0 && i + len <= s.size() && (len > 1 || c >= 0x20) && c != 0x7f;
    for (size_t k = 1; ok && k < len; ++k) ok = (static_cast<unsigned char>(s[i + k]) & 0xc0) == 0x80;
    if (ok && len > 1) {  // no overlong forms or surrogates, nothing past U+10FFFF
      uint32_t cp = c & (0x7f >> len);
      for (size_t k = 1; k < len; ++k) cp = cp << 6 | (static_cast<unsigned char>(s[i + k]) & 0x3f);
      const uint32_t least[] = {0, 0, 0x80, 0x800, 0x10000};
      ok = cp >= least[len] && cp <= 0x10ffff && (cp < 0xd800 || cp > 0xdfff);
    }
    out += ok ? s.substr(i, len) : "?";
    i += ok ? len : 1;
  }
  return out;
}

std::string xml_escaped(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// One axis: data range [lo, hi] (log10 of it on a log axis) onto pixels [p0, p1].
struct Axis {
  double lo = 0, hi = 1, p0 = 0, p1 = 1;
  bool log = false;
  double at(double v) const {  // halves first, so that no difference of finite doubles overflows
    const double t = ((log ? std::log10(v) : v) * 0.5 - lo * 0.5) / (hi * 0.5 - lo * 0.5);
    return p0 + t * (p1 - p0);
  }
  bool shows(double v) const { return std::isfinite(v) && (!log || v > 0); }
};

// Ticks every 1, 2 or 5 times a power of ten, about `target` of them across [lo, hi].
std::vector<double> linear_ticks(double lo, double hi, int target) {
  const double raw = (hi - lo) / std::max(target, 1);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double n = raw / mag;
  const double step = (n < 1.5 ? 1 : n < 3 ? 2 : n < 7 ? 5 : 10) * mag;
  // Counted, not stepped: far from zero (losses near 1e17 differing by 16) k + 1 == k in
  // doubles, and a loop on k would never end.
  std::vector<double> t;
  const double first = std::ceil(lo / step - 1e-9);
  for (int i = 0; i < 100; ++i) {
    const double v = (first + i) * step;
    if (!(v <= hi + 1e-9 * step)) break;
    if (t.empty() || v > t.back()) t.push_back(first + i == 0 ? 0 : v);
  }
  return t;
}

// On a log axis: 1, 2 and 5 times each power of ten inside the range (only the powers when
// that is plenty), or 1-2-5 linear steps when the range spans too little of a decade.
std::vector<double> log_ticks(const Axis& a, int target) {
  std::vector<double> t;
  for (int mult : {1, 2, 5}) {
    for (int e = static_cast<int>(std::floor(a.lo)); e <= static_cast<int>(std::ceil(a.hi)); ++e) {
      const double v = mult * std::pow(10.0, e);
      if (std::log10(v) >= a.lo - 1e-9 && std::log10(v) <= a.hi + 1e-9) t.push_back(v);
    }
    if (mult == 1 && static_cast<int>(t.size()) >= target) return t;
  }
  if (t.size() < 3) return linear_ticks(std::pow(10.0, a.lo), std::pow(10.0, a.hi), target);
  std::sort(t.begin(), t.end());
  return t;
}

// A tick's label: shortest of %g, with k/M/G for large x values (tokens).
std::string tick_label(double v, bool si) {
  const char* suffix = "";
  if (si) {
    for (auto [scale, s] : {std::pair{1e9, "G"}, {1e6, "M"}, {1e3, "k"}}) {
      if (std::fabs(v) >= scale) {
        v /= scale;
        suffix = s;
        break;
      }
    }
  }
  char b[48];
  std::snprintf(b, sizeof b, "%.6g%s", v, suffix);
  return b;
}

// Text placed by its anchor: ax, ay in [0, 1] pick the point of its box (0.5, 0.5: centre).
// Returns where its baseline starts.
std::pair<double, double> text_at(cairo_t* cr, const std::string& s, double x, double y, double ax, double ay) {
  cairo_text_extents_t e;
  cairo_text_extents(cr, s.c_str(), &e);
  const std::pair<double, double> origin{x - e.x_bearing - ax * e.width, y - e.y_bearing - ay * e.height};
  cairo_move_to(cr, origin.first, origin.second);
  cairo_show_text(cr, s.c_str());
  return origin;
}

double text_width(cairo_t* cr, const std::string& s) {
  cairo_text_extents_t e;
  cairo_text_extents(cr, s.c_str(), &e);
  return e.x_advance;
}

// A name of the legend as drawn: where its text sits (baseline), for the SVG's text layer.
struct LegendText {
  std::string text;
  double x, y;
};

struct Series {
  const RunCurves* run;
  Rgb colour;
  std::string name;
};

class Picture {
 public:
  Picture(cairo_t* cr, const PlotOptions& opt, const std::vector<Series>& series)
      : cr_(cr), opt_(opt), series_(series), fs_(std::clamp(std::min(opt.width, opt.height) / 48.0, 9.0, 32.0)) {}

  void draw() {
    cairo_set_source_rgb(cr_, 1, 1, 1);
    cairo_paint(cr_);
    cairo_select_font_face(cr_, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    const double w = opt_.width, h = opt_.height;
    const double left = fs_ * 5.5, right = w - fs_ * 1.5, top = fs_ * 3.2, bottom = h - fs_ * 3.8;
    const double gap = fs_ * 0.9, lr_h = (bottom - top - gap) * 0.24;
    const double main_bottom = bottom - lr_h - gap;
    Axis x = x_axis(left, right);
    Axis y = loss_axis(main_bottom, top);
    Axis lr = lr_axis(bottom, bottom - lr_h);

    cairo_set_font_size(cr_, fs_ * 1.25);
    cairo_set_source_rgb(cr_, 0, 0, 0);
    text_at(cr_, std::string("loss against ") + (opt_.x_tokens ? "tokens" : "steps") + (opt_.log_y ? " (log scale)" : ""),
            w / 2, fs_ * 1.4, 0.5, 0.5);
    cairo_set_font_size(cr_, fs_);

    frame(x, y, false, "loss (nats/token)");
    for (const Series& s : series_) curve(s, x, y, &CurvePoint::loss, false);
    for (const Series& s : series_) curve(s, x, y, &CurvePoint::val_loss, true);
    legend(x, y);

    frame(x, lr, true, "lr");
    for (const Series& s : series_) curve(s, x, lr, &CurvePoint::lr, false);
    if (!has_lr_) {  // counting kinds (ngram) have no learning rate
      cairo_set_source_rgb(cr_, 0.4, 0.4, 0.4);
      text_at(cr_, "no learning rate in these runs", (x.p0 + x.p1) / 2, (lr.p0 + lr.p1) / 2, 0.5, 0.5);
    }
    cairo_set_source_rgb(cr_, 0, 0, 0);
    text_at(cr_, opt_.x_tokens ? "tokens" : "step", (x.p0 + x.p1) / 2, h - fs_ * 0.6, 0.5, 1);
  }

  const std::vector<LegendText>& legend_texts() const { return legend_texts_; }
  double font_size() const { return fs_; }

 private:
  double x_of(const CurvePoint& p) const { return opt_.x_tokens ? p.tokens : p.step; }

  Axis x_axis(double p0, double p1) const {
    double hi = 0;
    for (const Series& s : series_)
      for (const CurvePoint& p : s.run->points)
        if (std::isfinite(x_of(p))) hi = std::max(hi, x_of(p));
    // From 0 (steps and tokens both start there) to the last point of the longest run.
    return Axis{.lo = 0, .hi = hi > 0 ? hi : 1, .p0 = p0, .p1 = p1};
  }

  Axis loss_axis(double p0, double p1) const {
    Axis a{.p0 = p0, .p1 = p1, .log = opt_.log_y};
    double lo = INFINITY, hi = -INFINITY;
    for (const Series& s : series_)
      for (const CurvePoint& p : s.run->points)
        for (double v : {p.loss, p.val_loss})
          if (a.shows(v) && std::isfinite(x_of(p))) {
            const double t = a.log ? std::log10(v) : v;
            lo = std::min(lo, t);
            hi = std::max(hi, t);
          }
    LOOM_USER_CHECK(lo <= hi, "--log: no positive loss in these runs to plot on a log scale");
    const double pad = hi > lo ? 0.05 * hi - 0.05 * lo : std::max(0.1 * std::fabs(hi), 0.05);
    a.lo = std::max(lo - pad, -std::numeric_limits<double>::max());
    a.hi = std::min(hi + pad, std::numeric_limits<double>::max());
    return a;
  }

  Axis lr_axis(double p0, double p1) {
    double hi = 0;
    for (const Series& s : series_)
      for (const CurvePoint& p : s.run->points)
        if (std::isfinite(p.lr) && std::isfinite(x_of(p))) hi = std::max(hi, p.lr);
    has_lr_ = hi > 0;
    return Axis{.lo = 0, .hi = has_lr_ ? std::min(hi * 1.1, std::numeric_limits<double>::max()) : 1, .p0 = p0, .p1 = p1};
  }

  // A panel's box, grid lines, ticks and labels (x labels only under the lowest panel).
  void frame(const Axis& x, const Axis& y, bool x_labels, const std::string& y_label) {
    const double tick = fs_ * 0.35;
    const int y_target = std::max(3, static_cast<int>(std::fabs(y.p0 - y.p1) / (fs_ * 3.5)));
    const std::vector<double> xt = linear_ticks(x.lo, x.hi, std::max(2, static_cast<int>((x.p1 - x.p0) / (fs_ * 7))));
    const std::vector<double> yt = y.log ? log_ticks(y, y_target) : linear_ticks(y.lo, y.hi, y_target);
    cairo_set_line_width(cr_, std::max(0.5, fs_ / 16));
    cairo_set_source_rgb(cr_, 0.88, 0.88, 0.88);
    for (double v : xt) {
      cairo_move_to(cr_, x.at(v), y.p0);
      cairo_line_to(cr_, x.at(v), y.p1);
    }
    for (double v : yt) {
      cairo_move_to(cr_, x.p0, y.at(v));
      cairo_line_to(cr_, x.p1, y.at(v));
    }
    cairo_stroke(cr_);
    cairo_set_source_rgb(cr_, 0, 0, 0);
    cairo_set_line_width(cr_, std::max(0.75, fs_ / 12));
    cairo_rectangle(cr_, x.p0, y.p1, x.p1 - x.p0, y.p0 - y.p1);
    for (double v : xt) {
      cairo_move_to(cr_, x.at(v), y.p0);
      cairo_line_to(cr_, x.at(v), y.p0 + tick);
    }
    for (double v : yt) {
      cairo_move_to(cr_, x.p0, y.at(v));
      cairo_line_to(cr_, x.p0 - tick, y.at(v));
    }
    cairo_stroke(cr_);
    if (x_labels)
      for (double v : xt) text_at(cr_, tick_label(v, true), x.at(v), y.p0 + tick * 2, 0.5, 0);
    double widest = 0;
    for (double v : yt) {
      const std::string s = tick_label(v, false);
      widest = std::max(widest, text_width(cr_, s));
      text_at(cr_, s, x.p0 - tick * 2, y.at(v), 1, 0.5);
    }
    cairo_save(cr_);
    cairo_translate(cr_, std::max(fs_ * 0.2, x.p0 - tick * 3 - widest - fs_ * 0.4), (y.p0 + y.p1) / 2);
    cairo_rotate(cr_, -std::numbers::pi / 2);
    text_at(cr_, y_label, 0, 0, 0.5, 1);
    cairo_restore(cr_);
  }

  // One series of every run: a line (dashed for validation, with a dot per point when there
  // are few enough to tell apart), clipped to the panel.
  void curve(const Series& s, const Axis& x, const Axis& y, double CurvePoint::* field, bool val) {
    cairo_save(cr_);
    cairo_rectangle(cr_, x.p0, y.p1, x.p1 - x.p0, y.p0 - y.p1);
    cairo_clip(cr_);
    cairo_set_source_rgb(cr_, s.colour.r, s.colour.g, s.colour.b);
    cairo_set_line_width(cr_, std::max(1.0, fs_ / 8));
    cairo_set_line_join(cr_, CAIRO_LINE_JOIN_ROUND);
    if (val) {
      const double dash[] = {fs_ * 0.6, fs_ * 0.35};
      cairo_set_dash(cr_, dash, 2, 0);
    }
    std::vector<std::pair<double, double>> pts;
    for (const CurvePoint& p : s.run->points)
      if (std::isfinite(x_of(p)) && y.shows(p.*field)) {
        const double px = x.at(x_of(p)), py = y.at(p.*field);
        if (std::isfinite(px) && std::isfinite(py)) pts.emplace_back(px, py);
      }
    for (size_t i = 0; i < pts.size(); ++i) (i ? cairo_line_to : cairo_move_to)(cr_, pts[i].first, pts[i].second);
    cairo_stroke(cr_);
    if (val && pts.size() <= 80) {
      for (const auto& [px, py] : pts) {
        cairo_new_sub_path(cr_);
        cairo_arc(cr_, px, py, fs_ * 0.25, 0, 2 * std::numbers::pi);
      }
      cairo_fill(cr_);
    }
    cairo_restore(cr_);
  }

  // The legend, top right inside the loss panel: each run's colour and name, then the two
  // line styles (train solid, val dashed with dots).
  void legend(const Axis& x, const Axis& y) {
    const double row = fs_ * 1.5, swatch = fs_ * 2.2, pad = fs_ * 0.6;
    std::vector<std::string> labels;
    for (const Series& s : series_) labels.push_back(s.name);
    labels.push_back("train loss");
    labels.push_back("val loss");
    double wmax = 0;
    for (const std::string& l : labels) wmax = std::max(wmax, text_width(cr_, l));
    const double bw = pad * 3 + swatch + wmax, bh = pad * 2 + row * static_cast<double>(labels.size());
    const double bx = x.p1 - bw - fs_ * 0.6, by = y.p1 + fs_ * 0.6;
    cairo_rectangle(cr_, bx, by, bw, bh);
    cairo_set_source_rgba(cr_, 1, 1, 1, 0.88);
    cairo_fill_preserve(cr_);
    cairo_set_source_rgb(cr_, 0.6, 0.6, 0.6);
    cairo_set_line_width(cr_, std::max(0.5, fs_ / 16));
    cairo_stroke(cr_);
    for (size_t i = 0; i < labels.size(); ++i) {
      const double cy = by + pad + row * (static_cast<double>(i) + 0.5);
      const bool style = i >= series_.size();
      const Rgb c = style ? Rgb{0.25, 0.25, 0.25} : series_[i].colour;
      cairo_set_source_rgb(cr_, c.r, c.g, c.b);
      cairo_set_line_width(cr_, std::max(1.5, fs_ / 6));
      const bool dashed = i == labels.size() - 1;
      if (dashed) {
        const double dash[] = {fs_ * 0.6, fs_ * 0.35};
        cairo_set_dash(cr_, dash, 2, 0);
      }
      cairo_move_to(cr_, bx + pad, cy);
      cairo_line_to(cr_, bx + pad + swatch, cy);
      cairo_stroke(cr_);
      cairo_set_dash(cr_, nullptr, 0, 0);
      if (dashed) {
        cairo_arc(cr_, bx + pad + swatch / 2, cy, fs_ * 0.25, 0, 2 * std::numbers::pi);
        cairo_fill(cr_);
      }
      cairo_set_source_rgb(cr_, 0, 0, 0);
      const double tx = bx + pad * 2 + swatch;
      const auto [ox, oy] = text_at(cr_, labels[i], tx, cy, 0, 0.5);
      if (!style) legend_texts_.push_back({labels[i], ox, oy});
    }
  }

  cairo_t* cr_;
  const PlotOptions& opt_;
  const std::vector<Series>& series_;
  const double fs_;  // the font size, from the picture's size; every other length follows it
  bool has_lr_ = false;
  std::vector<LegendText> legend_texts_;
};

cairo_status_t append_bytes(void* closure, const unsigned char* data, unsigned int length) {
  static_cast<std::string*>(closure)->append(reinterpret_cast<const char*>(data), length);
  return CAIRO_STATUS_SUCCESS;
}

// cairo's SVG draws text as glyph outlines, which no search, screen reader or test can read.
// So the picture gets a title and description naming the runs, and the legend's names again
// as real text, transparent, laid over the drawn ones (as a scanned PDF carries its text).
std::string with_svg_text(std::string svg, const std::vector<Series>& series, const std::vector<LegendText>& legend,
                          double font_size, const PlotOptions& opt) {
  std::string names, desc;
  for (const Series& s : series) {
    names += (names.empty() ? "" : ", ") + xml_escaped(s.name);
    desc += xml_escaped(s.name) + ": " + xml_escaped(printable(s.run->dir)) + "; ";
  }
  const std::string head = "<title>loss curves: " + names + "</title>\n<desc>train loss (solid) and val loss (dashed) "
                           "against " + (opt.x_tokens ? "tokens" : "steps") + " of the run folders " + desc +
                           "lr schedule below</desc>\n";
  std::string layer = "<g fill-opacity=\"0\" font-family=\"sans-serif\" font-size=\"" + std::to_string(font_size) + "\">\n";
  for (const LegendText& t : legend)
    layer += "<text x=\"" + std::to_string(t.x) + "\" y=\"" + std::to_string(t.y) + "\">" + xml_escaped(t.text) +
             "</text>\n";
  layer += "</g>\n";
  const size_t open = svg.find("<svg");
  const size_t open_end = open == std::string::npos ? open : svg.find('>', open);
  const size_t close = svg.rfind("</svg>");
  LOOM_CHECK(open_end != std::string::npos && close != std::string::npos && close > open_end,
             "cairo's SVG has no <svg> element");
  svg.insert(close, layer);
  svg.insert(open_end + 1, "\n" + head);
  return svg;
}

std::string render(const PlotOptions& opt, const std::vector<Series>& series, bool svg) {
  std::string bytes;
  cairo_surface_t* surface =
      svg ? cairo_svg_surface_create_for_stream(append_bytes, &bytes, opt.width, opt.height)
          : cairo_image_surface_create(CAIRO_FORMAT_ARGB32, opt.width, opt.height);
  if (svg) cairo_svg_surface_set_document_unit(surface, CAIRO_SVG_UNIT_USER);  // width="960", not "960pt"
  cairo_t* cr = cairo_create(surface);
  Picture pic(cr, opt, series);
  try {
    pic.draw();
  } catch (...) {
    cairo_destroy(cr);
    cairo_surface_destroy(surface);
    throw;
  }
  const cairo_status_t drawn = cairo_status(cr);
  cairo_destroy(cr);
  if (svg) {
    cairo_surface_finish(surface);
  } else if (drawn == CAIRO_STATUS_SUCCESS) {
    cairo_surface_write_to_png_stream(surface, append_bytes, &bytes);
  }
  const cairo_status_t done = cairo_surface_status(surface);
  cairo_surface_destroy(surface);
  LOOM_CHECK(drawn == CAIRO_STATUS_SUCCESS && done == CAIRO_STATUS_SUCCESS, "cairo: ",
             cairo_status_to_string(drawn != CAIRO_STATUS_SUCCESS ? drawn : done));
  return svg ? with_svg_text(std::move(bytes), series, pic.legend_texts(), pic.font_size(), opt) : bytes;
}

}  // namespace

#endif  // LOOM_HAVE_CAIRO

void plot_runs(const PlotOptions& opt) {
  std::string ext = fs::path(opt.out).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  LOOM_USER_CHECK(ext == ".png" || ext == ".svg", opt.out, ": unknown picture type '", ext,
                  "' (the name must end in .png or .svg)");
  LOOM_USER_CHECK(opt.width >= kMinPlotWidth && opt.width <= kMaxPlotSide, "--width: ", opt.width,
                  " is out of range (", kMinPlotWidth, " to ", kMaxPlotSide, " pixels)");
  LOOM_USER_CHECK(opt.height >= kMinPlotHeight && opt.height <= kMaxPlotSide, "--height: ", opt.height,
                  " is out of range (", kMinPlotHeight, " to ", kMaxPlotSide, " pixels)");
  LOOM_USER_CHECK(!opt.runs.empty(), "loom plot: no run folders given");
  LOOM_USER_CHECK(static_cast<int>(opt.runs.size()) <= kMaxPlotRuns, "loom plot: ", opt.runs.size(),
                  " run folders; at most ", kMaxPlotRuns, " fit one picture");
  std::vector<RunCurves> runs;
  for (const std::string& dir : opt.runs) runs.push_back(read_run_curves(dir));
  if (opt.x_tokens)
    for (const RunCurves& r : runs)
      LOOM_USER_CHECK(std::any_of(r.points.begin(), r.points.end(), [](const CurvePoint& p) { return std::isfinite(p.tokens); }),
                      r.dir, "/metrics.jsonl: no \"tokens\" in its lines (plot it with --x steps)");
#ifdef LOOM_HAVE_CAIRO
  std::vector<Series> series;
  for (size_t i = 0; i < runs.size(); ++i) {
    // Two folders of the same name (runs/a/x, runs/b/x) are told apart by their paths.
    const bool clash = std::count_if(runs.begin(), runs.end(), [&](const RunCurves& r) { return r.name == runs[i].name; }) > 1;
    series.push_back({&runs[i], kPalette[i % std::size(kPalette)], printable(clash ? runs[i].dir : runs[i].name)});
  }
  write_file_atomic(opt.out, render(opt, series, ext == ".svg"));
#else
  user_error(opt.out, ": this loom was built without cairo, which draws the pictures (install libcairo2-dev, "
                      "e.g. scripts/install_deps.sh, then configure and build again)");
#endif
}

}  // namespace loom
