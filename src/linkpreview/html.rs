//! Preview metadata from an HTML page, parsed with html5ever (through `scraper`), never with
//! string matching: OpenGraph first, then Twitter cards, `<title>` and `<meta name=description>`.

use scraper::{Html, Selector};
use url::Url;

/// Longest title / site name / description kept, in characters (longer ones are cut).
const MAX_TITLE_CHARS: usize = 300;
const MAX_SITE_NAME_CHARS: usize = 200;
const MAX_DESCRIPTION_CHARS: usize = 1000;
/// Longest image URL returned, in bytes (the request URL has the same limit).
const MAX_IMAGE_URL_BYTES: usize = 2048;

/// What a page says about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageMeta {
    pub title: Option<String>,
    pub description: Option<String>,
    /// Absolute `http(s)` URL (relative ones are resolved against the page's final URL).
    pub image: Option<String>,
    pub site_name: Option<String>,
}

/// Extracts the preview fields from `html`, fetched from `base` (after redirects).
pub fn extract(html: &str, base: &Url) -> PageMeta {
    let doc = Html::parse_document(html);
    let (Ok(meta_sel), Ok(head_title_sel), Ok(title_sel)) =
        (Selector::parse("meta"), Selector::parse("head title"), Selector::parse("title"))
    else {
        return PageMeta::default();
    };

    // First value wins for each key, as crawlers do.
    let mut og_title = None;
    let mut og_description = None;
    let mut og_image = None;
    let mut og_site_name = None;
    let mut tw_title = None;
    let mut tw_description = None;
    let mut tw_image = None;
    let mut description = None;
    for meta in doc.select(&meta_sel) {
        let Some(key) = meta.attr("property").or_else(|| meta.attr("name")) else { continue };
        let Some(content) = meta.attr("content") else { continue };
        let slot = match key.trim().to_ascii_lowercase().as_str() {
            "og:title" => &mut og_title,
            "og:description" => &mut og_description,
            "og:image" | "og:image:url" | "og:image:secure_url" => &mut og_image,
            "og:site_name" => &mut og_site_name,
            "twitter:title" => &mut tw_title,
            "twitter:description" => &mut tw_description,
            "twitter:image" | "twitter:image:src" => &mut tw_image,
            "description" => &mut description,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(content.to_string());
        }
    }
    let html_title = doc
        .select(&head_title_sel)
        .next()
        .or_else(|| doc.select(&title_sel).next())
        .map(|t| t.text().collect::<String>());

    let pick = |candidates: [Option<String>; 3], max: usize| {
        candidates.into_iter().flatten().find_map(|v| clean(&v, max))
    };
    PageMeta {
        title: pick([og_title, tw_title, html_title], MAX_TITLE_CHARS),
        description: pick([og_description, description, tw_description], MAX_DESCRIPTION_CHARS),
        image: [og_image, tw_image].into_iter().flatten().find_map(|v| absolute_image(&v, base)),
        site_name: pick([og_site_name, None, None], MAX_SITE_NAME_CHARS),
    }
}

/// Whitespace collapsed, trimmed, cut to `max` characters; `None` when nothing is left.
fn clean(text: &str, max: usize) -> Option<String> {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.is_empty() {
        return None;
    }
    Some(match collapsed.char_indices().nth(max) {
        Some((cut, _)) => collapsed[..cut].to_string(),
        None => collapsed,
    })
}

/// The image as an absolute `http`/`https` URL, or `None` (data:, javascript:, too long, …).
fn absolute_image(value: &str, base: &Url) -> Option<String> {
    let url = base.join(value.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return None;
    }
    let url = String::from(url);
    (url.len() <= MAX_IMAGE_URL_BYTES).then_some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("https://example.com/articles/one").unwrap()
    }

    #[test]
    fn opengraph_wins_over_title_and_description() {
        let html = r#"<!doctype html><html><head>
            <title>Plain title</title>
            <meta name="description" content="Plain description">
            <meta property="og:title" content="  OG
                title ">
            <meta property="og:description" content="OG description">
            <meta property="og:image" content="/img/cover.png">
            <meta property="og:site_name" content="Example">
            </head><body></body></html>"#;
        let meta = extract(html, &base());
        assert_eq!(meta.title.as_deref(), Some("OG title"));
        assert_eq!(meta.description.as_deref(), Some("OG description"));
        assert_eq!(meta.image.as_deref(), Some("https://example.com/img/cover.png"));
        assert_eq!(meta.site_name.as_deref(), Some("Example"));
    }

    #[test]
    fn falls_back_to_title_and_meta_description() {
        let html = "<html><head><title>Hello &amp; welcome</title>\
                    <meta name=Description content='About us'></head></html>";
        let meta = extract(html, &base());
        assert_eq!(meta.title.as_deref(), Some("Hello & welcome"));
        assert_eq!(meta.description.as_deref(), Some("About us"));
        assert_eq!(meta.image, None);
        assert_eq!(meta.site_name, None);
    }

    #[test]
    fn tags_inside_scripts_and_comments_are_not_metadata() {
        let html = r#"<html><head>
            <script>var s = '<meta property="og:title" content="fake">';</script>
            <!-- <title>commented</title> -->
            <title>Real</title></head></html>"#;
        let meta = extract(html, &base());
        assert_eq!(meta.title.as_deref(), Some("Real"));
    }

    #[test]
    fn non_http_images_are_dropped_and_long_text_is_cut() {
        let long = "x".repeat(5000);
        let html = format!(
            r#"<meta property="og:image" content="javascript:alert(1)">
               <meta name="twitter:image" content="data:image/png;base64,AAAA">
               <meta property="og:title" content="{long}">"#
        );
        let meta = extract(&html, &base());
        assert_eq!(meta.image, None);
        assert_eq!(meta.title.as_deref().map(str::len), Some(MAX_TITLE_CHARS));
    }

    #[test]
    fn empty_and_garbage_documents_give_nothing() {
        assert_eq!(extract("", &base()), PageMeta::default());
        assert_eq!(extract("<<<>>><meta content>", &base()), PageMeta::default());
        assert_eq!(extract("<title>   </title>", &base()), PageMeta::default());
    }
}
