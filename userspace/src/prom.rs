//! The one writer of the Prometheus text format (version 0.0.4) every part's counters
//! go through: `# HELP`, `# TYPE`, then the samples. A small writer rather than the
//! `prometheus-client` crate: the counters already live in the parts as atomics and
//! engine state, read once per scrape, so a registry would only add a second copy of
//! each; what the format needs (escaping label values, one HELP/TYPE per family) is
//! here.
use std::fmt::{Display, Write as _};

/// The kind of a metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// A metrics page being written.
#[derive(Default)]
pub struct Page(String);

impl Page {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a family: its help line and type.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
        self
    }

    /// One sample of the family started last, with `labels` (values escaped).
    pub fn sample(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: impl Display,
    ) -> &mut Self {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
        self
    }

    /// A family of one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Display) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    /// A family with one label, a sample per value.
    pub fn by_label<'a, V: Display>(
        &mut self,
        name: &str,
        kind: Kind,
        help: &str,
        label: &str,
        values: impl IntoIterator<Item = (&'a str, V)>,
    ) -> &mut Self {
        self.family(name, kind, help);
        for (l, v) in values {
            self.sample(name, &[(label, l)], v);
        }
        self
    }

    /// Appends another part's page.
    pub fn append(&mut self, other: &str) -> &mut Self {
        self.0.push_str(other);
        self
    }

    #[must_use]
    pub fn finish(self) -> String {
        self.0
    }
}

/// Label values escape `\`, `"` and newlines.
fn escape(v: &str) -> std::borrow::Cow<'_, str> {
    if v.contains(['\\', '"', '\n']) {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
            .into()
    } else {
        v.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escapes() {
        let mut p = Page::new();
        p.single("a_total", Kind::Counter, "As.", 3)
            .by_label("b", Kind::Gauge, "Bs.", "x", [("1", 1), ("2", 2)])
            .family("c", Kind::Gauge, "Cs.")
            .sample("c", &[("node", "q\"u\\o\nte"), ("s", "up")], 1);
        assert_eq!(
            p.finish(),
            "# HELP a_total As.\n# TYPE a_total counter\na_total 3\n\
             # HELP b Bs.\n# TYPE b gauge\nb{x=\"1\"} 1\nb{x=\"2\"} 2\n\
             # HELP c Cs.\n# TYPE c gauge\nc{node=\"q\\\"u\\\\o\\nte\",s=\"up\"} 1\n"
        );
    }
}
