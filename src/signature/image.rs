//! Turning what a phone uploads — a PNG, the strokes of a signature pad, or the SVG a
//! signature pad exports — into a checked signature image: a real PNG within the size limits
//! that actually carries a signature.

use std::io::Cursor;

use resvg::{tiny_skia, usvg};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// A signature that passed every check. `png` holds the bytes exactly as they are stored and
/// served; `sha256` is their lowercase hex digest, the key they are stored under.
#[derive(Clone, PartialEq, Eq)]
pub struct SignatureImage {
    pub png: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub sha256: String,
}

impl std::fmt::Debug for SignatureImage {
    // The bytes would flood a log line; their hash identifies them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignatureImage")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("size", &self.png.len())
            .field("sha256", &self.sha256)
            .finish()
    }
}

/// What an acceptable signature looks like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest PNG accepted, in bytes.
    pub max_bytes: usize,
    /// Largest stroke JSON accepted, in bytes.
    pub max_stroke_bytes: usize,
    /// Most points over all strokes, which bounds the rendering work.
    pub max_stroke_points: usize,
    /// Largest SVG text accepted, in bytes.
    pub max_svg_bytes: usize,
    pub max_width: u32,
    pub max_height: u32,
    pub min_width: u32,
    pub min_height: u32,
    /// Fewest ink pixels for the image not to count as blank.
    pub min_ink_pixels: u32,
    /// Fewest columns between the leftmost and the rightmost ink pixel: a dot is not a signature.
    pub min_ink_span: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 512 * 1024,
            max_stroke_bytes: 1024 * 1024,
            max_stroke_points: 100_000,
            max_svg_bytes: 256 * 1024,
            max_width: 2000,
            max_height: 1000,
            min_width: 100,
            min_height: 40,
            min_ink_pixels: 150,
            min_ink_span: 20,
        }
    }
}

/// Why a signature was refused. `Display` is the message shown to the person signing;
/// [`SignatureError::code`] is the stable machine code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("签名不是有效的 PNG 图片")]
    NotAnImage,
    #[error("签名图片超过 {max_kb} KB")]
    TooLarge { max_kb: usize },
    #[error("签名笔迹数据超过 {max_kb} KB")]
    StrokesTooLarge { max_kb: usize },
    #[error(
        "签名图片尺寸应在 {min_width}×{min_height} 到 {max_width}×{max_height} 像素之间（实际 {width}×{height}）"
    )]
    BadDimensions {
        width: u64,
        height: u64,
        min_width: u32,
        min_height: u32,
        max_width: u32,
        max_height: u32,
    },
    #[error("签名为空白，请重新签名")]
    Blank,
    #[error("签名笔迹数据无效")]
    BadStrokes,
    #[error("签名 SVG 图片超过 {max_kb} KB")]
    SvgTooLarge { max_kb: usize },
    #[error("签名 SVG 图片无效")]
    BadSvg,
}

impl SignatureError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotAnImage => "not_an_image",
            Self::TooLarge { .. } | Self::StrokesTooLarge { .. } | Self::SvgTooLarge { .. } => {
                "too_large"
            }
            Self::BadDimensions { .. } => "bad_dimensions",
            Self::Blank => "blank",
            Self::BadStrokes => "bad_strokes",
            Self::BadSvg => "bad_svg",
        }
    }
}

/// Checks an uploaded PNG: decodes it completely (so a truncated or corrupt file is refused),
/// checks size and dimensions, and that it carries enough ink to be a signature. The bytes are
/// kept as they came.
pub fn from_png(bytes: &[u8], limits: &Limits) -> Result<SignatureImage, SignatureError> {
    if bytes.len() > limits.max_bytes {
        return Err(SignatureError::TooLarge {
            max_kb: limits.max_bytes.div_ceil(1024),
        });
    }
    let pixels = decode(bytes, limits)?;
    let ink = count_ink(&pixels);
    if ink.pixels < u64::from(limits.min_ink_pixels) || ink.span < limits.min_ink_span {
        return Err(SignatureError::Blank);
    }
    Ok(SignatureImage {
        png: bytes.to_vec(),
        width: pixels.width,
        height: pixels.height,
        sha256: sha256_hex(bytes),
    })
}

/// Renders signature-pad strokes — `{"width":W,"height":H,"strokes":[[[x,y],…],…]}`, points
/// also as `{"x":…,"y":…}` — as black lines on white, encodes that as a PNG and checks it like
/// an upload.
pub fn from_strokes(json: &str, limits: &Limits) -> Result<SignatureImage, SignatureError> {
    if json.len() > limits.max_stroke_bytes {
        return Err(SignatureError::StrokesTooLarge {
            max_kb: limits.max_stroke_bytes.div_ceil(1024),
        });
    }
    let pad: StrokePad = serde_json::from_str(json).map_err(|_| SignatureError::BadStrokes)?;
    let width = canvas_side(pad.width)?;
    let height = canvas_side(pad.height)?;
    check_dimensions(u64::from(width), u64::from(height), limits)?;

    let points: usize = pad.strokes.iter().map(Vec::len).sum();
    if points > limits.max_stroke_points {
        return Err(SignatureError::BadStrokes);
    }
    let mut strokes = Vec::with_capacity(pad.strokes.len());
    for stroke in &pad.strokes {
        let stroke = stroke
            .iter()
            .map(StrokePoint::xy)
            .collect::<Option<Vec<_>>>()
            .ok_or(SignatureError::BadStrokes)?;
        strokes.push(stroke);
    }

    let pixmap = draw_strokes(width, height, &strokes).ok_or(SignatureError::BadStrokes)?;
    let png = encode_rendering(&pixmap).map_err(|_| SignatureError::BadStrokes)?;
    from_png(&png, limits)
}

/// Renders an SVG signature — as signature-pad libraries export it: `path`, `polyline` or
/// `circle` strokes, sized by `width`/`height` or a `viewBox` — in its own colours on white,
/// encodes that as a PNG and checks it like an upload. A drawing larger than the limits is
/// scaled down to fit; one smaller than the minimum is refused.
///
/// Only plain drawing is accepted — shapes, groups, gradients — within a bounded amount of
/// rendering work; what repeats or post-processes a drawing (`use`, markers, patterns,
/// filters, masks, clipping, translucent groups) is refused as [`SignatureError::BadSvg`].
/// Nothing outside the document is ever loaded: images, linked or embedded, and text are
/// left out of the rendering.
pub fn from_svg(svg: &str, limits: &Limits) -> Result<SignatureImage, SignatureError> {
    if svg.len() > limits.max_svg_bytes {
        return Err(SignatureError::SvgTooLarge {
            max_kb: limits.max_svg_bytes.div_ceil(1024),
        });
    }
    // No drawing needs an entity, and a few nested ones turn a small file into gigabytes of
    // text before the drawing is even looked at.
    if svg.contains("<!ENTITY") {
        return Err(SignatureError::BadSvg);
    }
    let xml = usvg::roxmltree::Document::parse_with_options(
        svg,
        usvg::roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )
    .map_err(|_| SignatureError::BadSvg)?;
    check_svg_elements(&xml)?;

    let options = usvg::Options {
        // The defaults would read any file path named in `<image href>` from this server's
        // disk, and decode images embedded as data URLs.
        image_href_resolver: usvg::ImageHrefResolver {
            resolve_data: Box::new(|_, _, _| None),
            resolve_string: Box::new(|_, _| None),
        },
        ..usvg::Options::default()
    };
    let tree = usvg::Tree::from_xmltree(&xml, &options).map_err(|_| SignatureError::BadSvg)?;
    let size = tree.size();
    let (width, height) = svg_canvas(size.width(), size.height(), limits);
    check_dimensions(u64::from(width), u64::from(height), limits)?;
    let page = usvg::Rect::from_xywh(0.0, 0.0, size.width(), size.height())
        .ok_or(SignatureError::BadSvg)?;
    let mut coverage = 0.0;
    if !within_drawing_budget(tree.root(), &page, &mut coverage) {
        return Err(SignatureError::BadSvg);
    }

    let mut pixmap = tiny_skia::Pixmap::new(width, height).ok_or(SignatureError::BadSvg)?;
    pixmap.fill(tiny_skia::Color::WHITE);
    let transform = tiny_skia::Transform::from_scale(
        width as f32 / size.width(),
        height as f32 / size.height(),
    );
    resvg::render(&tree, transform, &mut pixmap.as_mut());
    let png = encode_rendering(&pixmap).map_err(|_| SignatureError::BadSvg)?;
    from_png(&png, limits)
}

const SVG_NAMESPACE: &str = "http://www.w3.org/2000/svg";

/// The SVG elements a signature may contain: what signature pads and drawing programs write
/// for strokes on a page. Images and text are accepted and left out of the rendering. What
/// repeats or post-processes a drawing — `use`, `marker`, `pattern`, `filter`, `mask`,
/// `clipPath`, a nested `svg` — is refused: a few kilobytes of it cost minutes of rendering
/// or gigabytes of memory. Elements of other vocabularies (an editor's metadata) are ignored.
const SVG_ELEMENTS: &[&str] = &[
    "svg",
    "g",
    "defs",
    "title",
    "desc",
    "metadata",
    "style",
    "path",
    "polyline",
    "polygon",
    "line",
    "circle",
    "ellipse",
    "rect",
    "linearGradient",
    "radialGradient",
    "stop",
    "image",
    "text",
    "tspan",
    "textPath",
];

/// Deepest nesting of elements accepted; signature pads write two or three levels.
const MAX_SVG_DEPTH: usize = 32;

/// Most drawing an SVG may ask for: the areas of the page its shapes cover, summed, in pages.
/// The strokes of a signature cover a few pages at most, and 64 pages are drawn in a fraction
/// of a second.
const MAX_SVG_COVERAGE: f64 = 64.0;

fn check_svg_elements(xml: &usvg::roxmltree::Document) -> Result<(), SignatureError> {
    fn check(node: usvg::roxmltree::Node, depth: usize) -> Result<(), SignatureError> {
        let name = node.tag_name();
        let svg = matches!(name.namespace(), None | Some(SVG_NAMESPACE));
        let allowed =
            !svg || (SVG_ELEMENTS.contains(&name.name()) && (name.name() != "svg" || depth == 1));
        if !allowed || depth > MAX_SVG_DEPTH {
            return Err(SignatureError::BadSvg);
        }
        node.children()
            .filter(|child| child.is_element())
            .try_for_each(|child| check(child, depth + 1))
    }
    check(xml.root_element(), 1)
}

/// Adds to `coverage` the pages that drawing `group` covers — each shape's bounds, as far as
/// they lie on `page` — and says whether that stays within [`MAX_SVG_COVERAGE`]. A group
/// drawn apart and then blended in (group opacity, a blend mode, isolation) is refused: its
/// layer may be 25 times the page, in memory and in work for everything drawn on it.
fn within_drawing_budget(group: &usvg::Group, page: &usvg::Rect, coverage: &mut f64) -> bool {
    if group.should_isolate() {
        return false;
    }
    for node in group.children() {
        match node {
            usvg::Node::Group(child) => {
                if !within_drawing_budget(child, page, coverage) {
                    return false;
                }
            }
            shape => {
                if let Some(part) = shape.abs_stroke_bounding_box().intersect(page) {
                    *coverage += f64::from(part.width()) * f64::from(part.height())
                        / (f64::from(page.width()) * f64::from(page.height()));
                }
            }
        }
        if *coverage > MAX_SVG_COVERAGE {
            return false;
        }
    }
    true
}

/// The pixel size an SVG of `width`×`height` is drawn at: its own, or scaled down to fit the
/// largest allowed image with its proportions kept.
fn svg_canvas(width: f32, height: f32, limits: &Limits) -> (u32, u32) {
    let (width, height) = (f64::from(width), f64::from(height));
    let scale = (f64::from(limits.max_width) / width)
        .min(f64::from(limits.max_height) / height)
        .min(1.0);
    // Saturates for absurd sizes, which the dimension check then refuses.
    let side = |value: f64| (value * scale).round().min(f64::from(u32::MAX)) as u32;
    (side(width), side(height))
}

/// Encodes a rendering on opaque white as an 8-bit PNG: grayscale when every pixel is a shade
/// of gray, as black ink is, RGB when the ink has a colour.
fn encode_rendering(pixmap: &tiny_skia::Pixmap) -> Result<Vec<u8>, png::EncodingError> {
    // Every pixel is opaque, so the premultiplied samples are the colours themselves.
    let pixels = pixmap.data().chunks_exact(4);
    if pixels.clone().all(|px| px[0] == px[1] && px[1] == px[2]) {
        let gray: Vec<u8> = pixels.map(|px| px[0]).collect();
        encode_png(
            pixmap.width(),
            pixmap.height(),
            png::ColorType::Grayscale,
            &gray,
        )
    } else {
        let rgb: Vec<u8> = pixels.flat_map(|px| [px[0], px[1], px[2]]).collect();
        encode_png(pixmap.width(), pixmap.height(), png::ColorType::Rgb, &rgb)
    }
}

fn encode_png(
    width: u32,
    height: u32,
    color: png::ColorType,
    data: &[u8],
) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(color);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(data)?;
    writer.finish()?;
    Ok(out)
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for byte in digest {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

fn check_dimensions(width: u64, height: u64, limits: &Limits) -> Result<(), SignatureError> {
    let fits = (u64::from(limits.min_width)..=u64::from(limits.max_width)).contains(&width)
        && (u64::from(limits.min_height)..=u64::from(limits.max_height)).contains(&height);
    if fits {
        Ok(())
    } else {
        Err(SignatureError::BadDimensions {
            width,
            height,
            min_width: limits.min_width,
            min_height: limits.min_height,
            max_width: limits.max_width,
            max_height: limits.max_height,
        })
    }
}

/// Decoded pixels, 8 bits per sample with alpha: gray+alpha (2 channels) or RGBA (4).
struct Pixels {
    width: u32,
    height: u32,
    channels: usize,
    line_size: usize,
    data: Vec<u8>,
}

fn decode(bytes: &[u8], limits: &Limits) -> Result<Pixels, SignatureError> {
    // The decoder's own allocation cap, so a file that lies in its header cannot make it
    // reserve more than the largest allowed image needs (16-bit RGBA, plus room for chunks).
    let cap = (limits.max_width as usize)
        .saturating_mul(limits.max_height as usize)
        .saturating_mul(8)
        .saturating_add(4 * 1024 * 1024);
    let mut decoder = png::Decoder::new_with_limits(Cursor::new(bytes), png::Limits { bytes: cap });
    // Every colour type, bit depth, palette and tRNS comes out as 8-bit gray+alpha or RGBA.
    decoder.set_transformations(
        png::Transformations::EXPAND | png::Transformations::STRIP_16 | png::Transformations::ALPHA,
    );
    let (width, height) = decoder
        .read_header_info()
        .map_err(|_| SignatureError::NotAnImage)?
        .size();
    // Before anything is allocated for the pixels.
    check_dimensions(u64::from(width), u64::from(height), limits)?;

    let mut reader = decoder
        .read_info()
        .map_err(|_| SignatureError::NotAnImage)?;
    let size = reader
        .output_buffer_size()
        .ok_or(SignatureError::NotAnImage)?;
    let mut data = vec![0; size];
    let frame = reader
        .next_frame(&mut data)
        .map_err(|_| SignatureError::NotAnImage)?;
    // Reads on to IEND, so checksums and truncation after the image data are caught too.
    reader.finish().map_err(|_| SignatureError::NotAnImage)?;

    let channels = match (frame.color_type, frame.bit_depth) {
        (png::ColorType::GrayscaleAlpha, png::BitDepth::Eight) => 2,
        (png::ColorType::Rgba, png::BitDepth::Eight) => 4,
        _ => return Err(SignatureError::NotAnImage),
    };
    let needed = frame.line_size.checked_mul(frame.height as usize);
    if frame.line_size < frame.width as usize * channels || needed.is_none_or(|n| n > data.len()) {
        return Err(SignatureError::NotAnImage);
    }
    Ok(Pixels {
        width: frame.width,
        height: frame.height,
        channels,
        line_size: frame.line_size,
        data,
    })
}

struct Ink {
    pixels: u64,
    /// Columns from the leftmost to the rightmost ink pixel, both included.
    span: u32,
}

/// How much darker than the background a pixel must be to count as ink (of 255).
const INK_CONTRAST: u8 = 64;
/// How opaque a pixel must be to count as ink (of 255).
const INK_MIN_ALPHA: u8 = 128;

/// Counts ink: pixels opaque enough and clearly darker than the image's dominant background.
/// Each pixel is seen as it would look on white paper, so a transparent background counts as
/// white and transparent pixels never count as ink.
fn count_ink(pixels: &Pixels) -> Ink {
    let rows = || {
        pixels
            .data
            .chunks_exact(pixels.line_size)
            .take(pixels.height as usize)
    };
    let shade = |px: &[u8]| -> (u8, u8) {
        let (luma, alpha) = if pixels.channels == 2 {
            (u32::from(px[0]), u32::from(px[1]))
        } else {
            // ITU-R BT.601 luma in integers.
            let luma =
                (299 * u32::from(px[0]) + 587 * u32::from(px[1]) + 114 * u32::from(px[2])) / 1000;
            (luma, u32::from(px[3]))
        };
        let on_white = (luma * alpha + 255 * (255 - alpha) + 127) / 255;
        (on_white as u8, alpha as u8)
    };

    let mut histogram = [0u64; 256];
    for row in rows() {
        for px in row
            .chunks_exact(pixels.channels)
            .take(pixels.width as usize)
        {
            histogram[usize::from(shade(px).0)] += 1;
        }
    }
    let background = dominant_shade(&histogram);
    let threshold = background.saturating_sub(INK_CONTRAST);

    let mut count = 0u64;
    let (mut left, mut right) = (u32::MAX, 0u32);
    if background >= INK_CONTRAST {
        for row in rows() {
            for (x, px) in row
                .chunks_exact(pixels.channels)
                .take(pixels.width as usize)
                .enumerate()
            {
                let (value, alpha) = shade(px);
                if alpha >= INK_MIN_ALPHA && value < threshold {
                    count += 1;
                    let x = x as u32;
                    left = left.min(x);
                    right = right.max(x);
                }
            }
        }
    }
    Ink {
        pixels: count,
        span: if count == 0 { 0 } else { right - left + 1 },
    }
}

/// The most common shade, smoothed over a small window so that the noise of a photographed
/// page or an anti-aliased edge does not split the background into many near-equal shades.
fn dominant_shade(histogram: &[u64; 256]) -> u8 {
    const HALF_WINDOW: usize = 8;
    let mut best = (0u64, 255u8);
    for centre in 0..256usize {
        let from = centre.saturating_sub(HALF_WINDOW);
        let to = (centre + HALF_WINDOW).min(255);
        let weight: u64 = histogram[from..=to].iter().sum();
        // Ties go to the lighter shade: paper is light.
        if weight >= best.0 {
            best = (weight, centre as u8);
        }
    }
    best.1
}

#[derive(Deserialize)]
struct StrokePad {
    width: f64,
    height: f64,
    strokes: Vec<Vec<StrokePoint>>,
}

/// A point as signature pads send it: `[x, y]` (maybe with time or pressure after), or an
/// object with `x` and `y` (other fields ignored).
#[derive(Deserialize)]
#[serde(untagged)]
enum StrokePoint {
    Pair(Vec<f64>),
    Object { x: f64, y: f64 },
}

impl StrokePoint {
    fn xy(&self) -> Option<(f64, f64)> {
        let (x, y) = match self {
            Self::Pair(values) if values.len() >= 2 => (values[0], values[1]),
            Self::Pair(_) => return None,
            Self::Object { x, y } => (*x, *y),
        };
        // A finger that slides off the pad gives points a little outside it; anything
        // beyond this is not from a signature pad.
        let plausible = |v: f64| v.is_finite() && v.abs() <= MAX_COORDINATE;
        (plausible(x) && plausible(y)).then_some((x, y))
    }
}

fn canvas_side(value: f64) -> Result<u32, SignatureError> {
    if !value.is_finite() || value < 0.0 {
        return Err(SignatureError::BadStrokes);
    }
    // Saturates for absurd sizes, which the dimension check then refuses.
    Ok(value.round().min(f64::from(u32::MAX)) as u32)
}

/// Largest coordinate accepted in stroke data, in pixels either way from the pad's corner.
const MAX_COORDINATE: f64 = 100_000.0;

/// Pen width in pixels: lines come out 3 px thick.
const PEN_WIDTH: f32 = 3.0;

/// Draws signature-pad strokes in black on a white `width`×`height` canvas with a round pen
/// (round caps and joins), a tap as a dot; `None` for a canvas of no pixels. Not
/// anti-aliased: the ink is black on white, as from a pen on paper. tiny-skia clips what
/// lies off the canvas before it draws, so a point far off the pad costs nothing.
fn draw_strokes(width: u32, height: u32, strokes: &[Vec<(f64, f64)>]) -> Option<tiny_skia::Pixmap> {
    let mut pixmap = tiny_skia::Pixmap::new(width, height)?;
    pixmap.fill(tiny_skia::Color::WHITE);
    let mut pen = tiny_skia::PathBuilder::new();
    for stroke in strokes {
        let mut points = stroke.iter().map(|&(x, y)| (x as f32, y as f32));
        let Some((x, y)) = points.next() else {
            continue;
        };
        pen.move_to(x, y);
        // A tap is a line of no length, which the round caps draw as a dot.
        pen.line_to(x, y);
        for (x, y) in points {
            pen.line_to(x, y);
        }
    }
    if let Some(path) = pen.finish() {
        let mut ink = tiny_skia::Paint::default();
        ink.set_color(tiny_skia::Color::BLACK);
        ink.anti_alias = false;
        let nib = tiny_skia::Stroke {
            width: PEN_WIDTH,
            line_cap: tiny_skia::LineCap::Round,
            line_join: tiny_skia::LineJoin::Round,
            ..tiny_skia::Stroke::default()
        };
        pixmap.stroke_path(&path, &ink, &nib, tiny_skia::Transform::identity(), None);
    }
    Some(pixmap)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes raw samples as a PNG of the given colour type and depth.
    fn encode(
        width: u32,
        height: u32,
        color: png::ColorType,
        depth: png::BitDepth,
        data: &[u8],
        palette: Option<(&[u8], Option<&[u8]>)>,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut out, width, height);
            encoder.set_color(color);
            encoder.set_depth(depth);
            encoder.set_compression(png::Compression::Fast);
            if let Some((palette, trns)) = palette {
                encoder.set_palette(palette.to_vec());
                if let Some(trns) = trns {
                    encoder.set_trns(trns.to_vec());
                }
            }
            let mut writer = encoder.write_header().unwrap();
            writer.write_image_data(data).unwrap();
            writer.finish().unwrap();
        }
        out
    }

    /// Whether `(x, y)` lies on a hand-written-looking scribble: a wave across most of the
    /// width plus an underline.
    fn on_scribble(x: u32, y: u32, width: u32, height: u32) -> bool {
        let (w, h) = (f64::from(width), f64::from(height));
        let (fx, fy) = (f64::from(x), f64::from(y));
        if fx < w * 0.1 || fx > w * 0.9 {
            return false;
        }
        let wave = h * 0.45 + h * 0.2 * (fx / 9.0).sin();
        let underline = h * 0.8;
        (fy - wave).abs() <= 1.5 || (fy - underline).abs() <= 1.0
    }

    fn rgba_scribble(width: u32, height: u32) -> Vec<u8> {
        let mut data = Vec::new();
        for y in 0..height {
            for x in 0..width {
                if on_scribble(x, y, width, height) {
                    data.extend_from_slice(&[20, 20, 90, 255]);
                } else {
                    data.extend_from_slice(&[0, 0, 0, 0]);
                }
            }
        }
        encode(
            width,
            height,
            png::ColorType::Rgba,
            png::BitDepth::Eight,
            &data,
            None,
        )
    }

    fn gray_image(width: u32, height: u32, mut shade: impl FnMut(u32, u32) -> u8) -> Vec<u8> {
        let mut data = Vec::new();
        for y in 0..height {
            for x in 0..width {
                data.push(shade(x, y));
            }
        }
        encode(
            width,
            height,
            png::ColorType::Grayscale,
            png::BitDepth::Eight,
            &data,
            None,
        )
    }

    fn code(result: Result<SignatureImage, SignatureError>) -> &'static str {
        match result {
            Ok(image) => panic!("accepted: {image:?}"),
            Err(error) => error.code(),
        }
    }

    #[test]
    fn a_scribble_on_a_transparent_background_is_accepted_as_it_came() {
        let png = rgba_scribble(400, 150);
        let image = from_png(&png, &Limits::default()).expect("accepted");
        assert_eq!((image.width, image.height), (400, 150));
        assert_eq!(image.png, png);
        assert_eq!(image.sha256, sha256_hex(&png));
        assert_eq!(image.sha256.len(), 64);
        assert!(
            image
                .sha256
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        );
    }

    #[test]
    fn the_sha256_is_that_of_the_bytes() {
        // SHA-256 of "abc", from FIPS 180-2.
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn every_colour_type_and_depth_is_read() {
        let (w, h) = (300u32, 100u32);
        let ink = |x, y| on_scribble(x, y, w, h);
        let limits = Limits::default();

        // RGB on white.
        let mut rgb = Vec::new();
        for y in 0..h {
            for x in 0..w {
                rgb.extend_from_slice(if ink(x, y) {
                    &[0, 0, 0]
                } else {
                    &[255, 255, 255]
                });
            }
        }
        let png = encode(w, h, png::ColorType::Rgb, png::BitDepth::Eight, &rgb, None);
        from_png(&png, &limits).expect("rgb");

        // 8-bit grayscale on light-gray paper with dark-gray ink.
        let png = gray_image(w, h, |x, y| if ink(x, y) { 60 } else { 220 });
        from_png(&png, &limits).expect("gray");

        // 16-bit grayscale with alpha: transparent background.
        let mut gray16 = Vec::new();
        for y in 0..h {
            for x in 0..w {
                let (value, alpha): (u16, u16) = if ink(x, y) { (0, 65535) } else { (65535, 0) };
                gray16.extend_from_slice(&value.to_be_bytes());
                gray16.extend_from_slice(&alpha.to_be_bytes());
            }
        }
        let png = encode(
            w,
            h,
            png::ColorType::GrayscaleAlpha,
            png::BitDepth::Sixteen,
            &gray16,
            None,
        );
        from_png(&png, &limits).expect("gray+alpha 16");

        // 16-bit RGB.
        let mut rgb16 = Vec::new();
        for y in 0..h {
            for x in 0..w {
                let value: u16 = if ink(x, y) { 1000 } else { 64000 };
                for _ in 0..3 {
                    rgb16.extend_from_slice(&value.to_be_bytes());
                }
            }
        }
        let png = encode(
            w,
            h,
            png::ColorType::Rgb,
            png::BitDepth::Sixteen,
            &rgb16,
            None,
        );
        from_png(&png, &limits).expect("rgb 16");

        // Palette with a transparent background entry.
        let indices: Vec<u8> = (0..h)
            .flat_map(|y| (0..w).map(move |x| u8::from(ink(x, y))))
            .collect();
        let palette = [255, 255, 255, 10, 10, 10];
        let png = encode(
            w,
            h,
            png::ColorType::Indexed,
            png::BitDepth::Eight,
            &indices,
            Some((&palette, Some(&[0, 255]))),
        );
        from_png(&png, &limits).expect("palette with tRNS");

        // 1-bit grayscale: white background, black ink.
        let stride = w.div_ceil(8) as usize;
        let mut bits = vec![0u8; stride * h as usize];
        for y in 0..h {
            for x in 0..w {
                if !ink(x, y) {
                    bits[y as usize * stride + x as usize / 8] |= 0x80 >> (x % 8);
                }
            }
        }
        let png = encode(
            w,
            h,
            png::ColorType::Grayscale,
            png::BitDepth::One,
            &bits,
            None,
        );
        from_png(&png, &limits).expect("1-bit gray");
    }

    #[test]
    fn blank_images_are_refused() {
        let limits = Limits::default();
        let white = gray_image(400, 150, |_, _| 255);
        assert_eq!(code(from_png(&white, &limits)), "blank");

        let black = gray_image(400, 150, |_, _| 0);
        assert_eq!(code(from_png(&black, &limits)), "blank");

        let transparent = encode(
            400,
            150,
            png::ColorType::Rgba,
            png::BitDepth::Eight,
            &vec![0; 400 * 150 * 4],
            None,
        );
        assert_eq!(code(from_png(&transparent, &limits)), "blank");

        // Dark strokes that are almost fully transparent do not show on paper.
        let mut faint = Vec::new();
        for y in 0..150 {
            for x in 0..400 {
                let alpha = if on_scribble(x, y, 400, 150) { 40 } else { 0 };
                faint.extend_from_slice(&[0, 0, 0, alpha]);
            }
        }
        let faint = encode(
            400,
            150,
            png::ColorType::Rgba,
            png::BitDepth::Eight,
            &faint,
            None,
        );
        assert_eq!(code(from_png(&faint, &limits)), "blank");
    }

    #[test]
    fn a_dot_is_not_a_signature() {
        let limits = Limits::default();
        // A small dot: too little ink.
        let dot = gray_image(400, 150, |x, y| {
            if (200..203).contains(&x) && (70..73).contains(&y) {
                0
            } else {
                255
            }
        });
        assert_eq!(code(from_png(&dot, &limits)), "blank");

        // A big blot: plenty of ink, but 15 px wide.
        let blot = gray_image(400, 150, |x, y| {
            if (200..215).contains(&x) && (50..100).contains(&y) {
                0
            } else {
                255
            }
        });
        assert_eq!(code(from_png(&blot, &limits)), "blank");
    }

    #[test]
    fn sizes_outside_the_limits_are_refused() {
        let limits = Limits::default();
        let tiny = gray_image(10, 10, |x, _| if x < 5 { 0 } else { 255 });
        assert_eq!(code(from_png(&tiny, &limits)), "bad_dimensions");

        // 5000×5000 white compresses well below the byte limit; its size is what is refused.
        let huge = gray_image(5000, 5000, |_, _| 255);
        assert!(huge.len() < limits.max_bytes);
        let error = from_png(&huge, &limits).unwrap_err();
        assert_eq!(error.code(), "bad_dimensions");
        assert_eq!(
            error.to_string(),
            "签名图片尺寸应在 100×40 到 2000×1000 像素之间（实际 5000×5000）"
        );

        let noisy = gray_image(1500, 900, |x, y| {
            (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)) as u8
        });
        assert!(noisy.len() > limits.max_bytes);
        let error = from_png(&noisy, &limits).unwrap_err();
        assert_eq!(error.code(), "too_large");
        assert_eq!(error.to_string(), "签名图片超过 512 KB");
    }

    #[test]
    fn what_is_not_a_png_is_refused() {
        let limits = Limits::default();
        let jpeg = [
            0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0x01, 0x01, 0x00,
        ];
        assert_eq!(code(from_png(&jpeg, &limits)), "not_an_image");
        assert_eq!(code(from_png(b"", &limits)), "not_an_image");
        assert_eq!(
            code(from_png(
                b"<svg xmlns='http://www.w3.org/2000/svg'/>",
                &limits
            )),
            "not_an_image"
        );
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let random: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        assert_eq!(code(from_png(&random, &limits)), "not_an_image");

        let good = rgba_scribble(400, 150);
        let truncated = &good[..good.len() * 2 / 3];
        assert_eq!(code(from_png(truncated, &limits)), "not_an_image");
        // Without IEND.
        let no_end = &good[..good.len() - 12];
        assert_eq!(code(from_png(no_end, &limits)), "not_an_image");
        // A flipped bit in the image data fails its checksum.
        let mut corrupt = good.clone();
        let middle = corrupt.len() / 2;
        corrupt[middle] ^= 0x40;
        assert_eq!(code(from_png(&corrupt, &limits)), "not_an_image");
    }

    /// A PNG whose IHDR declares `width`×`height` (with a correct CRC) and carries no data.
    fn header_only(width: u32, height: u32) -> Vec<u8> {
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(b"IHDR");
        ihdr.extend_from_slice(&width.to_be_bytes());
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
        let crc = crc32(&ihdr);
        let mut png = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
        png.extend_from_slice(&13u32.to_be_bytes());
        png.extend_from_slice(&ihdr);
        png.extend_from_slice(&crc.to_be_bytes());
        png.extend_from_slice(&[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82]);
        png
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn lying_headers_are_refused_without_allocating() {
        let limits = Limits::default();
        let huge = header_only(0x7FFF_FFFF, 0x7FFF_FFFF);
        assert_eq!(code(from_png(&huge, &limits)), "bad_dimensions");
        let zero = header_only(0, 0);
        assert!(matches!(
            code(from_png(&zero, &limits)),
            "not_an_image" | "bad_dimensions"
        ));
        // Plausible size but no pixel data.
        let empty = header_only(400, 150);
        assert_eq!(code(from_png(&empty, &limits)), "not_an_image");
        // Even with limits wider than the decoder can serve.
        let wide = Limits {
            max_width: u32::MAX,
            max_height: u32::MAX,
            ..Limits::default()
        };
        assert_eq!(code(from_png(&huge, &wide)), "not_an_image");
    }

    #[test]
    fn garbage_never_panics() {
        let limits = Limits::default();
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seeds = [
            rgba_scribble(200, 60),
            gray_image(120, 50, |x, y| if (x + y) % 7 == 0 { 0 } else { 255 }),
            header_only(300, 100),
        ];
        for seed in &seeds {
            // Every prefix.
            for end in 0..seed.len() {
                let _ = from_png(&seed[..end], &limits);
            }
            // Random byte flips, insertions and deletions.
            for _ in 0..400 {
                let mut bytes = seed.clone();
                for _ in 0..1 + next() % 4 {
                    let at = (next() as usize) % bytes.len();
                    match next() % 3 {
                        0 => bytes[at] = next() as u8,
                        1 => bytes.insert(at, next() as u8),
                        _ => {
                            bytes.remove(at);
                        }
                    }
                    if bytes.is_empty() {
                        break;
                    }
                }
                let _ = from_png(&bytes, &limits);
            }
        }
        const ALPHABET: &[u8] = b"{}[],:.-0123456789exyz\"widthstrokes ";
        for _ in 0..2000 {
            let len = (next() % 300) as usize;
            let bytes: String = (0..len)
                .map(|_| char::from(ALPHABET[next() as usize % ALPHABET.len()]))
                .collect();
            let _ = from_strokes(&bytes, &limits);
        }
        // Well-formed JSON with odd numbers: off-pad, negative, fractional, zero-size pads.
        let coordinate = |r: u64| (r % 200_000) as f64 / 100.0 - 700.0;
        for _ in 0..60 {
            let width = coordinate(next()).abs() % 700.0;
            let height = coordinate(next()).abs() % 300.0;
            let mut strokes = Vec::new();
            for _ in 0..next() % 4 {
                let points: Vec<(f64, f64)> = (0..next() % 30)
                    .map(|_| (coordinate(next()), coordinate(next())))
                    .collect();
                strokes.push(points);
            }
            let json = serde_json::json!({"width": width, "height": height, "strokes": strokes});
            let _ = from_strokes(&json.to_string(), &limits);
        }
        // Valid SVG with characters dropped, repeated or replaced.
        let seed: Vec<char> = signature_svg().chars().collect();
        const SVG_ALPHABET: &[u8] = b"<>/=\"' -.0123456789eMCLZmclzsvgpathd";
        for _ in 0..120 {
            let mut chars = seed.clone();
            for _ in 0..1 + next() % 6 {
                let at = (next() as usize) % chars.len();
                let other = char::from(SVG_ALPHABET[next() as usize % SVG_ALPHABET.len()]);
                match next() % 3 {
                    0 => chars[at] = other,
                    1 => chars.insert(at, other),
                    _ => {
                        chars.remove(at);
                    }
                }
            }
            let text: String = chars.into_iter().collect();
            let _ = from_svg(&text, &limits);
        }
    }

    #[test]
    fn strokes_are_rendered_and_accepted() {
        let limits = Limits::default();
        let mut first = Vec::new();
        for i in 0..=60 {
            let x = 40.0 + f64::from(i) * 5.2;
            let y = 70.0 + 35.0 * (f64::from(i) / 4.0).sin();
            first.push(serde_json::json!([x, y]));
        }
        let second: Vec<_> = (0..=20)
            .map(|i| serde_json::json!({"x": 60.0 + f64::from(i) * 12.5, "y": 125.5, "t": i}))
            .collect();
        let json = serde_json::json!({
            "width": 400.0,
            "height": 150,
            "strokes": [first, second],
        })
        .to_string();
        let image = from_strokes(&json, &limits).expect("accepted");
        assert_eq!((image.width, image.height), (400, 150));
        assert_eq!(image.sha256, sha256_hex(&image.png));
        // What is stored is a PNG that passes the upload checks on its own.
        assert_eq!(from_png(&image.png, &limits).unwrap(), image);

        // The rendering is deterministic, so the same strokes give the same hash.
        assert_eq!(from_strokes(&json, &limits).unwrap().sha256, image.sha256);
    }

    /// One stroke drawn on a 100×40 canvas, as its gray levels row by row.
    fn drawn_on_100_by_40(stroke: &[(f64, f64)]) -> Vec<u8> {
        let pixmap = draw_strokes(100, 40, &[stroke.to_vec()]).unwrap();
        pixmap.data().chunks_exact(4).map(|px| px[0]).collect()
    }

    #[test]
    fn the_pen_draws_lines_about_three_pixels_thick() {
        let thickness = |y: f64| {
            let pixels = drawn_on_100_by_40(&[(10.0, y), (90.0, y)]);
            (0..40).filter(|&row| pixels[row * 100 + 50] == 0).count()
        };
        // Through pixel centres, and along the edge between two rows.
        assert_eq!(thickness(20.5), 3);
        assert!((3..=4).contains(&thickness(20.0)));

        let pixels = drawn_on_100_by_40(&[(10.0, 20.5), (90.0, 20.5)]);
        let row = &pixels[20 * 100..21 * 100];
        assert!(row[9..=90].iter().all(|&v| v == 0));
        assert!(row[..8].iter().all(|&v| v == 255));
        assert!(row[92..].iter().all(|&v| v == 255));
    }

    #[test]
    fn strokes_far_off_the_pad_are_clipped_not_walked() {
        let limits = Limits::default();
        let json = serde_json::json!({
            "width": 400, "height": 150,
            "strokes": [[[-90000, 75], [90000, 75.5]], [[50000, 50000], [-60000, 90000]]],
        })
        .to_string();
        // One horizontal line across the pad: enough ink and span.
        let image = from_strokes(&json, &limits).expect("accepted");
        assert_eq!(image.width, 400);

        let absurd = r#"{"width":400,"height":150,"strokes":[[[-1e300,75],[1e300,75]]]}"#;
        assert_eq!(code(from_strokes(absurd, &limits)), "bad_strokes");
    }

    #[test]
    fn bad_strokes_are_refused() {
        let limits = Limits::default();
        let refused = |json: &str| code(from_strokes(json, &limits));

        assert_eq!(
            refused(r#"{"width":400,"height":150,"strokes":[]}"#),
            "blank"
        );
        assert_eq!(
            refused(r#"{"width":400,"height":150,"strokes":[[],[]]}"#),
            "blank"
        );
        // A tap is a dot.
        assert_eq!(
            refused(r#"{"width":400,"height":150,"strokes":[[[200,75]]]}"#),
            "blank"
        );
        assert_eq!(refused("not json"), "bad_strokes");
        assert_eq!(refused(r#"{"width":400,"height":150}"#), "bad_strokes");
        assert_eq!(
            refused(r#"{"width":400,"height":150,"strokes":[[[1]]]}"#),
            "bad_strokes"
        );
        assert_eq!(
            refused(r#"{"width":400,"height":150,"strokes":[[{"x":"a","y":1}]]}"#),
            "bad_strokes"
        );
        assert_eq!(
            refused(r#"{"width":-5,"height":150,"strokes":[]}"#),
            "bad_strokes"
        );
        assert_eq!(
            refused(r#"{"width":0,"height":0,"strokes":[]}"#),
            "bad_dimensions"
        );
        assert_eq!(
            refused(r#"{"width":1e30,"height":1e30,"strokes":[]}"#),
            "bad_dimensions"
        );
        assert_eq!(
            refused(r#"{"width":5000,"height":5000,"strokes":[[[0,0],[4999,4999]]]}"#),
            "bad_dimensions"
        );

        let many = format!(
            r#"{{"width":400,"height":150,"strokes":[[{}]]}}"#,
            vec!["[1,1]"; 100_001].join(",")
        );
        assert_eq!(refused(&many), "bad_strokes");
        let long = format!(
            r#"{{"width":400,"height":150,"strokes":[],"pad":"{}"}}"#,
            "x".repeat(2 * 1024 * 1024)
        );
        let error = from_strokes(&long, &limits).unwrap_err();
        assert_eq!(error.code(), "too_large");
        assert_eq!(error.to_string(), "签名笔迹数据超过 1024 KB");
    }

    #[test]
    fn messages_are_for_the_person_signing() {
        assert_eq!(
            SignatureError::NotAnImage.to_string(),
            "签名不是有效的 PNG 图片"
        );
        assert_eq!(SignatureError::Blank.to_string(), "签名为空白，请重新签名");
        assert_eq!(SignatureError::BadStrokes.to_string(), "签名笔迹数据无效");
        assert_eq!(SignatureError::BadSvg.to_string(), "签名 SVG 图片无效");
        assert_eq!(SignatureError::BadSvg.code(), "bad_svg");
        assert_eq!(
            SignatureError::SvgTooLarge { max_kb: 256 }.to_string(),
            "签名 SVG 图片超过 256 KB"
        );
        assert_eq!(
            SignatureError::SvgTooLarge { max_kb: 256 }.code(),
            "too_large"
        );
    }

    /// A signature as signature-pad libraries export it, drawn in a 400×150 space: bezier
    /// segments, a polyline underline and a dot, in `ink`.
    fn signature_strokes(ink: &str) -> String {
        format!(
            r#"<path d="M 40.000,80.000 C 70.500,20.000 100.000,130.000 140.000,75.000 C 180.000,20.000 210.000,120.000 250.000,70.000 C 290.000,25.000 320.000,110.000 360.000,60.000" fill="none" stroke="{ink}" stroke-width="3" stroke-linecap="round"></path><path d="M 90,40 L 120,100 L 150,45" fill="none" stroke="{ink}" stroke-width="2.5"/><polyline points="60,125 200,128 340,124" fill="none" stroke="{ink}" stroke-width="3"/><circle r="2" cx="370" cy="40" fill="{ink}"></circle>"#
        )
    }

    fn svg(attributes: &str, body: &str) -> String {
        format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" {attributes}>{body}</svg>"#
        )
    }

    fn signature_svg() -> String {
        svg(
            r#"viewBox="0 0 400 150" width="400" height="150""#,
            &signature_strokes("black"),
        )
    }

    /// The stored PNG decoded again: its pixels and the ink on them.
    fn ink_of(image: &SignatureImage) -> (Pixels, Ink) {
        let pixels = decode(&image.png, &Limits::default()).expect("a PNG");
        let ink = count_ink(&pixels);
        (pixels, ink)
    }

    fn is_dark(pixels: &Pixels, x: usize, y: usize) -> bool {
        let at = y * pixels.line_size + x * pixels.channels;
        pixels.data[at..at + pixels.channels - 1]
            .iter()
            .all(|&v| v < 100)
    }

    fn color_type(png: &[u8]) -> png::ColorType {
        let reader = png::Decoder::new(Cursor::new(png)).read_info().unwrap();
        reader.info().color_type
    }

    #[test]
    fn an_svg_signature_is_rendered_and_accepted() {
        let limits = Limits::default();
        let image = from_svg(&signature_svg(), &limits).expect("accepted");
        assert_eq!((image.width, image.height), (400, 150));
        assert_eq!(image.sha256, sha256_hex(&image.png));
        // What is stored is a PNG that passes the upload checks on its own.
        assert_eq!(from_png(&image.png, &limits).unwrap(), image);
        // Black ink on white is stored as grayscale, as rendered strokes are.
        assert_eq!(color_type(&image.png), png::ColorType::Grayscale);

        let (pixels, ink) = ink_of(&image);
        assert_eq!((pixels.width, pixels.height), (400, 150));
        assert!(ink.pixels > 1500, "{} ink pixels", ink.pixels);
        // From the curve's start at x=40 to the dot at x=370.
        assert!((325..=340).contains(&ink.span), "span {}", ink.span);
        // On the underline, on the dot, and on the paper around them.
        assert!(is_dark(&pixels, 200, 128));
        assert!(is_dark(&pixels, 370, 40));
        assert!(!is_dark(&pixels, 200, 140));
        assert!(!is_dark(&pixels, 5, 5));

        // The rendering is deterministic, so the same SVG gives the same hash.
        assert_eq!(
            from_svg(&signature_svg(), &limits).unwrap().sha256,
            image.sha256
        );

        // Sized by its viewBox alone, or by width and height alone, it comes out the same.
        let by_view_box = svg(r#"viewBox="0 0 400 150""#, &signature_strokes("black"));
        assert_eq!(from_svg(&by_view_box, &limits).unwrap(), image);
        let by_size = svg(r#"width="400" height="150""#, &signature_strokes("black"));
        assert_eq!(from_svg(&by_size, &limits).unwrap(), image);
    }

    #[test]
    fn coloured_ink_keeps_its_colour() {
        let blue = svg(
            r#"viewBox="0 0 400 150" width="400" height="150""#,
            &signature_strokes("#1a3d9c"),
        );
        let image = from_svg(&blue, &Limits::default()).expect("accepted");
        assert_eq!(color_type(&image.png), png::ColorType::Rgb);
        let (pixels, _) = ink_of(&image);
        let at = 128 * pixels.line_size + 200 * pixels.channels;
        assert_eq!(&pixels.data[at..at + 4], &[0x1a, 0x3d, 0x9c, 255]);
    }

    #[test]
    fn a_blank_svg_is_refused() {
        let limits = Limits::default();
        let size = r#"viewBox="0 0 400 150" width="400" height="150""#;
        for body in [
            String::new(),
            // A background and nothing on it.
            r##"<rect width="100%" height="100%" fill="#ffffff"/>"##.to_owned(),
            // Strokes in white, or without a stroke colour.
            signature_strokes("white"),
            signature_strokes("none"),
            // Strokes entirely off the page.
            format!(
                r#"<g transform="translate(1000 1000)">{}</g>"#,
                signature_strokes("black")
            ),
            // A tap is a dot.
            r#"<circle r="2" cx="200" cy="75" fill="black"/>"#.to_owned(),
        ] {
            let error = from_svg(&svg(size, &body), &limits).unwrap_err();
            assert_eq!(error, SignatureError::Blank, "{body}");
        }
        // A black page is no signature either.
        let black = svg(
            size,
            &format!(
                r#"<rect width="400" height="150" fill="black"/>{}"#,
                signature_strokes("white")
            ),
        );
        assert_eq!(code(from_svg(&black, &limits)), "blank");
    }

    #[test]
    fn what_is_not_an_svg_is_refused() {
        let limits = Limits::default();
        let refused = |text: &str| code(from_svg(text, &limits));
        assert_eq!(refused(""), "bad_svg");
        assert_eq!(refused("not an svg"), "bad_svg");
        assert_eq!(refused("\u{89}PNG\r\n\u{1a}\n"), "bad_svg");
        assert_eq!(
            refused(r#"{"width":400,"height":150,"strokes":[]}"#),
            "bad_svg"
        );
        // Cut off half-way.
        let whole = signature_svg();
        assert_eq!(refused(&whole[..whole.len() / 2]), "bad_svg");
        assert_eq!(refused(&whole.replace("</svg>", "")), "bad_svg");
        // XML, but not SVG.
        assert_eq!(
            refused(r#"<?xml version="1.0"?><note><to>resident</to><body>hello</body></note>"#),
            "bad_svg"
        );
        assert_eq!(
            refused("<html><body><p>signature</p></body></html>"),
            "bad_svg"
        );
        // Without the SVG namespace, as a page's `outerHTML` gives an inline `<svg>`, it is
        // still the drawing.
        let bare = format!(
            r#"<svg width="400" height="150">{}</svg>"#,
            signature_strokes("black")
        );
        assert_eq!(
            from_svg(&bare, &limits).unwrap(),
            from_svg(&signature_svg(), &limits).unwrap()
        );
        // A size that is no size.
        for size in [r#"width="0" height="150""#, r#"width="-400" height="150""#] {
            assert_eq!(refused(&svg(size, &signature_strokes("black"))), "bad_svg");
        }
    }

    #[test]
    fn entities_are_refused_before_they_expand() {
        let limits = Limits::default();
        // About 100 KB of text, referenced 255 times per `&b;`, 100 times: gigabytes if expanded.
        let bomb = format!(
            r#"<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "{}"><!ENTITY b "{}">]><svg xmlns="http://www.w3.org/2000/svg" width="400" height="150"><desc>{}</desc>{}</svg>"#,
            "x".repeat(100_000),
            "&a;".repeat(255),
            "&b;".repeat(100),
            signature_strokes("black"),
        );
        assert!(bomb.len() < limits.max_svg_bytes);
        assert_eq!(code(from_svg(&bomb, &limits)), "bad_svg");

        // A plain doctype, as drawing programs write it, is fine.
        let with_doctype = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">{}"#,
            signature_svg()
        );
        from_svg(&with_doctype, &limits).expect("accepted");
    }

    #[test]
    fn an_svg_over_the_byte_limit_is_refused() {
        let limits = Limits::default();
        let signature = signature_svg();
        let padded = |len: usize| {
            let comment = "<!--".len() + "-->".len();
            let padding = "x".repeat(len - signature.len() - comment);
            signature.replace("</svg>", &format!("<!--{padding}--></svg>"))
        };
        let at_limit = padded(limits.max_svg_bytes);
        assert_eq!(at_limit.len(), 256 * 1024);
        from_svg(&at_limit, &limits).expect("accepted at the limit");

        let over = padded(limits.max_svg_bytes + 1);
        let error = from_svg(&over, &limits).unwrap_err();
        assert_eq!(error, SignatureError::SvgTooLarge { max_kb: 256 });
        assert_eq!(error.code(), "too_large");
        assert_eq!(error.to_string(), "签名 SVG 图片超过 256 KB");

        let smaller = Limits {
            max_svg_bytes: signature.len() - 1,
            ..Limits::default()
        };
        assert_eq!(code(from_svg(&signature, &smaller)), "too_large");
    }

    #[test]
    fn images_and_text_are_left_out_and_nothing_is_fetched() {
        use base64::Engine;
        use std::net::TcpListener;

        let limits = Limits::default();
        // The same drawing as a file on this server and embedded as a data URL: read or
        // decoded, either would pass as a signature.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("signature.svg");
        std::fs::write(&file, signature_svg()).unwrap();
        let file = file.to_str().unwrap();
        let data_url = format!(
            "data:image/svg+xml;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(signature_svg())
        );
        // A server that would see any request.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}/signature.svg", listener.local_addr().unwrap());

        let size = r#"viewBox="0 0 400 150" width="400" height="150""#;
        let bodies = [
            format!(r#"<image href="{url}" width="400" height="150"/>"#),
            format!(r#"<image xlink:href="{url}" width="400" height="150"/>"#),
            format!(r#"<image href="{file}" width="400" height="150"/>"#),
            format!(r#"<image xlink:href="file://{file}" width="400" height="150"/>"#),
            format!(r#"<image href="{data_url}" width="400" height="150"/>"#),
            format!(
                r#"<style>@import url("{url}");</style><rect width="400" height="150" fill="white" style="fill: url({url}#paint)"/>"#
            ),
            r#"<text x="20" y="100" font-family="sans-serif" font-size="72" fill="black">张三 Zhang San</text>"#.to_owned(),
        ];
        for body in &bodies {
            let error = from_svg(&svg(size, body), &limits).unwrap_err();
            assert_eq!(error, SignatureError::Blank, "{body}");
        }
        // Other ways of referring to outside files are refused outright.
        for body in [
            format!(
                r#"<filter id="f" x="0" y="0" width="1" height="1"><feImage href="{file}"/></filter><rect width="400" height="150" fill="white" filter="url(#f)"/>"#
            ),
            format!(r#"<use href="{file}#signature"/><use href="{url}#signature"/>"#),
        ] {
            let error = from_svg(&svg(size, &body), &limits).unwrap_err();
            assert_eq!(error, SignatureError::BadSvg, "{body}");
        }
        match listener.accept() {
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("the server was contacted: {other:?}"),
        }
        // Beside real strokes they change nothing.
        let mixed = svg(
            size,
            &format!("{}{}", bodies[4], signature_strokes("black")),
        );
        assert_eq!(
            from_svg(&mixed, &limits).unwrap(),
            from_svg(&signature_svg(), &limits).unwrap()
        );
    }

    #[test]
    fn what_repeats_or_post_processes_a_drawing_is_refused() {
        let limits = Limits::default();
        let size = r#"viewBox="0 0 400 150" width="400" height="150""#;
        let line = r#"<path d="M 40,75 L 360,75" stroke="black" stroke-width="3"/>"#;
        // About a kilobyte of `use`, each level repeating the one below ten times: a million
        // copies of the line.
        let mut repeated = format!(r#"<defs><g id="u0">{line}</g>"#);
        for level in 1..=6 {
            repeated.push_str(&format!(r#"<g id="u{level}">"#));
            for _ in 0..10 {
                repeated.push_str(&format!(r##"<use href="#u{}"/>"##, level - 1));
            }
            repeated.push_str("</g>");
        }
        repeated.push_str(r##"</defs><use href="#u6"/>"##);
        let bodies = [
            repeated,
            format!(r##"<defs>{line}</defs><use xlink:href="#s"/>"##)
                .replace("<path ", r#"<path id="s" "#),
            format!(
                r##"<marker id="m" markerWidth="400" markerHeight="150" markerUnits="userSpaceOnUse">{line}</marker><path marker-mid="url(#m)" d="M 0,0 L 1,1 L 2,2 L 3,3"/>"##
            ),
            format!(
                r##"<pattern id="p" width="4" height="4" patternUnits="userSpaceOnUse">{line}</pattern><rect width="400" height="150" fill="url(#p)"/>"##
            ),
            format!(
                r##"<filter id="f"><feGaussianBlur stdDeviation="200"/></filter><g filter="url(#f)">{line}</g>"##
            ),
            format!(
                r##"<mask id="m"><rect width="400" height="150" fill="white"/></mask><g mask="url(#m)">{line}</g>"##
            ),
            format!(
                r##"<clipPath id="c"><rect width="400" height="150"/></clipPath><g clip-path="url(#c)">{line}</g>"##
            ),
            format!(r#"<svg width="400" height="150">{line}</svg>"#),
            format!("{}{line}{}", "<g>".repeat(40), "</g>".repeat(40)),
        ];
        for body in &bodies {
            let error = from_svg(&svg(size, body), &limits).unwrap_err();
            assert_eq!(error, SignatureError::BadSvg, "{body}");
        }
        // Plain groups a few levels deep, and an editor's metadata, are fine.
        let plain = format!(
            r#"<metadata><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description/></rdf:RDF></metadata>{}{}{}"#,
            "<g>".repeat(10),
            signature_strokes("black"),
            "</g>".repeat(10)
        );
        from_svg(&svg(size, &plain), &limits).expect("accepted");
    }

    #[test]
    fn rendering_work_is_bounded() {
        let limits = Limits::default();
        let size = r#"viewBox="0 0 400 150" width="400" height="150""#;
        // The same stroke from corner to corner, over and over: each covers the whole page.
        let crossing = |lines: usize| {
            r#"<path d="M 0,0 L 400,150" stroke="black" stroke-width="2"/>"#.repeat(lines)
        };
        from_svg(&svg(size, &crossing(60)), &limits).expect("accepted");
        assert_eq!(
            code(from_svg(&svg(size, &crossing(70)), &limits)),
            "bad_svg"
        );

        // Shapes off the page cost nothing.
        let off_page = format!(
            r#"<g transform="translate(5000 0)">{}</g>{}"#,
            crossing(500),
            signature_strokes("black")
        );
        from_svg(&svg(size, &off_page), &limits).expect("accepted");

        // The page is what counts, whatever the viewBox.
        let magnified = r#"viewBox="0 0 400 150" width="1200" height="450""#;
        from_svg(&svg(magnified, &crossing(60)), &limits).expect("accepted");
        assert_eq!(
            code(from_svg(&svg(magnified, &crossing(70)), &limits)),
            "bad_svg"
        );

        // Translucent ink is drawn straight onto the page; a translucent group needs a layer
        // of its own, and is refused.
        let translucent =
            signature_strokes("black").replace("<path ", r#"<path stroke-opacity="0.8" "#);
        from_svg(&svg(size, &translucent), &limits).expect("accepted");
        let opaque_group = format!(r#"<g opacity="1">{}</g>"#, signature_strokes("black"));
        from_svg(&svg(size, &opaque_group), &limits).expect("accepted");
        for layered in [
            format!(r#"<g opacity="0.9">{}</g>"#, signature_strokes("black")),
            signature_strokes("black").replace("<path ", r#"<path opacity="0.5" "#),
            format!(
                r#"<g style="mix-blend-mode: multiply">{}</g>"#,
                signature_strokes("black")
            ),
        ] {
            assert_eq!(
                code(from_svg(&svg(size, &layered), &limits)),
                "bad_svg",
                "{layered}"
            );
        }
    }

    #[test]
    fn a_large_svg_is_scaled_down_to_fit() {
        let limits = Limits::default();
        let scaled =
            |factor: u32, body: &str| format!(r#"<g transform="scale({factor})">{body}</g>"#);
        // A huge viewBox and no size: 40000×15000 is drawn at 2000×750.
        let huge = svg(
            r#"viewBox="0 0 40000 15000""#,
            &scaled(100, &signature_strokes("black")),
        );
        let image = from_svg(&huge, &limits).expect("accepted");
        assert_eq!((image.width, image.height), (2000, 750));
        let (pixels, ink) = ink_of(&image);
        assert_eq!((pixels.width, pixels.height), (2000, 750));
        // The whole drawing, not its corner: ink from x≈200 to x≈1850.
        assert!(ink.span > 1600, "span {}", ink.span);
        assert!(is_dark(&pixels, 1000, 640));

        // Height is what limits a tall drawing: 3000×3000 becomes 1000×1000.
        let tall = svg(
            r#"viewBox="0 0 400 150" width="3000" height="3000" preserveAspectRatio="none""#,
            &signature_strokes("black"),
        );
        let image = from_svg(&tall, &limits).expect("accepted");
        assert_eq!((image.width, image.height), (1000, 1000));

        // Within the limits the SVG's own size is kept, and narrower limits scale it further.
        let own = svg(
            r#"viewBox="0 0 400 150" width="1200" height="450""#,
            &signature_strokes("black"),
        );
        let image = from_svg(&own, &limits).expect("accepted");
        assert_eq!((image.width, image.height), (1200, 450));
        let narrow = Limits {
            max_width: 600,
            max_height: 600,
            ..Limits::default()
        };
        let image = from_svg(&own, &narrow).expect("accepted");
        assert_eq!((image.width, image.height), (600, 225));

        // Absurd sizes are scaled like any other.
        let absurd = svg(
            r#"viewBox="0 0 400 150" width="4e20" height="1.5e20""#,
            &signature_strokes("black"),
        );
        let image = from_svg(&absurd, &limits).expect("accepted");
        assert_eq!((image.width, image.height), (2000, 750));
    }

    #[test]
    fn an_svg_too_small_or_too_thin_is_refused() {
        let limits = Limits::default();
        let small = svg(
            r#"viewBox="0 0 400 150" width="80" height="30""#,
            &signature_strokes("black"),
        );
        let error = from_svg(&small, &limits).unwrap_err();
        assert_eq!(error.code(), "bad_dimensions");
        assert_eq!(
            error.to_string(),
            "签名图片尺寸应在 100×40 到 2000×1000 像素之间（实际 80×30）"
        );
        // Scaled to fit its width, a strip is too low to hold a signature.
        let strip = svg(
            r#"viewBox="0 0 400 150" width="100000" height="1500" preserveAspectRatio="none""#,
            &signature_strokes("black"),
        );
        let error = from_svg(&strip, &limits).unwrap_err();
        assert_eq!(error.code(), "bad_dimensions");
        assert!(error.to_string().ends_with("（实际 2000×30）"), "{error}");
    }
}
