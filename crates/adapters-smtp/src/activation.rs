//! The activation email's content: subject, plain text and HTML, rendered from the templates in
//! `templates/` by plain `{{name}}` placeholder replacement (no template engine). Values put into
//! the HTML are escaped; the plain text takes them as they are.

use std::time::Duration;

const TEXT_TEMPLATE: &str = include_str!("../templates/activation.txt");
const HTML_TEMPLATE: &str = include_str!("../templates/activation.html");

/// What the activation email says, ready to be put into a MIME message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ActivationContent {
    pub(crate) subject: String,
    pub(crate) text: String,
    pub(crate) html: String,
}

/// Renders the activation email for `recipient` carrying `code`, valid for `valid_for`.
pub(crate) fn render(
    product: &str,
    code: &str,
    valid_for: Duration,
    recipient: &str,
) -> ActivationContent {
    let validity = humane_duration(valid_for);
    let values = [
        ("product", product),
        ("code", code),
        ("validity", validity.as_str()),
        ("email", recipient),
    ];
    ActivationContent {
        subject: format!("Your {product} activation code: {code}"),
        text: fill(TEXT_TEMPLATE, &values, ToOwned::to_owned),
        html: fill(HTML_TEMPLATE, &values, escape_html),
    }
}

/// A duration as people say it, rounded down so that the email never promises more time than
/// there is: seconds below two minutes, minutes below two hours, hours from then on.
pub(crate) fn humane_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let (count, unit) = match seconds {
        0 => return "less than a second".to_owned(),
        1..120 => (seconds, "second"),
        120..7_200 => (seconds / 60, "minute"),
        _ => (seconds / 3_600, "hour"),
    };
    if count == 1 {
        format!("1 {unit}")
    } else {
        format!("{count} {unit}s")
    }
}

/// Replaces each `{{name}}` of `template` with `encode(value)`, in one pass: text that a value
/// brings in is never scanned for placeholders again. Unknown placeholders are left as they are
/// (a test checks that the templates use none).
fn fill(template: &str, values: &[(&str, &str)], encode: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let value = after.find("}}").and_then(|end| {
            let name = after[..end].trim();
            values
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (encode(value), end))
        });
        if let Some((encoded, end)) = value {
            out.push_str(&encoded);
            rest = &after[end + 2..];
        } else {
            out.push_str("{{");
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Escapes the five characters that matter in HTML text and attribute values.
pub(crate) fn escape_html(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ActivationContent {
        render(
            "Registrar",
            "0421",
            Duration::from_mins(1),
            "ada@example.com",
        )
    }

    #[test]
    fn the_subject_names_the_product_and_the_code() {
        assert_eq!(sample().subject, "Your Registrar activation code: 0421");
    }

    #[test]
    fn both_bodies_carry_the_code_the_validity_the_product_and_the_address() {
        let content = sample();
        for body in [&content.text, &content.html] {
            assert!(body.contains("0421"), "{body}");
            assert!(body.contains("valid for"), "{body}");
            assert!(body.contains("60 seconds"), "{body}");
            assert!(body.contains("Registrar"), "{body}");
            assert!(body.contains("ada@example.com"), "{body}");
        }
    }

    #[test]
    fn the_templates_leave_no_placeholder_behind() {
        let content = sample();
        for body in [&content.text, &content.html] {
            assert!(!body.contains("{{"), "{body}");
            assert!(!body.contains("}}"), "{body}");
        }
    }

    #[test]
    fn the_templates_are_ascii_so_the_message_needs_no_8bitmime() {
        assert!(TEXT_TEMPLATE.is_ascii());
        assert!(HTML_TEMPLATE.is_ascii());
    }

    #[test]
    fn the_plain_text_keeps_lines_short() {
        for line in sample().text.lines() {
            assert!(line.len() <= 78, "{line:?}");
        }
    }

    #[test]
    fn values_are_escaped_in_the_html_but_not_in_the_text() {
        let content = render(
            "<b>R&D</b>",
            "0421",
            Duration::from_mins(1),
            "o'brien&co@example.com",
        );
        assert!(content.html.contains("&lt;b&gt;R&amp;D&lt;/b&gt;"));
        assert!(content.html.contains("o&#39;brien&amp;co@example.com"));
        assert!(!content.html.contains("<b>R&D</b>"));
        assert!(content.text.contains("<b>R&D</b>"));
        assert!(content.text.contains("o'brien&co@example.com"));
    }

    #[test]
    fn a_value_that_looks_like_a_placeholder_is_not_filled_in_again() {
        let content = render(
            "{{code}}",
            "0421",
            Duration::from_mins(1),
            "ada@example.com",
        );
        assert!(content.text.contains("your {{code}} activation code is"));
    }

    #[test]
    fn fill_leaves_unknown_and_unclosed_placeholders_alone() {
        let encode = |value: &str| value.to_owned();
        assert_eq!(
            fill(
                "a {{x}} {{ y }} {{z}} {{",
                &[("x", "1"), ("y", "2")],
                encode
            ),
            "a 1 2 {{z}} {{"
        );
    }

    #[test]
    fn durations_read_as_seconds_below_two_minutes_then_minutes_then_hours() {
        let cases = [
            (Duration::from_millis(400), "less than a second"),
            (Duration::from_secs(1), "1 second"),
            (Duration::from_millis(1_900), "1 second"),
            (Duration::from_secs(45), "45 seconds"),
            (Duration::from_mins(1), "60 seconds"),
            (Duration::from_secs(119), "119 seconds"),
            (Duration::from_mins(2), "2 minutes"),
            (Duration::from_secs(150), "2 minutes"),
            (Duration::from_mins(15), "15 minutes"),
            (Duration::from_secs(7_199), "119 minutes"),
            (Duration::from_hours(2), "2 hours"),
            (Duration::from_hours(24), "24 hours"),
        ];
        for (duration, expected) in cases {
            assert_eq!(humane_duration(duration), expected, "{duration:?}");
        }
    }
}
