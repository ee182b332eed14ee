//! Reading Prometheus text exposition (the kubelet's /metrics, /metrics/resource, the
//! CRI's metrics) in tests.

/// The value of the series `name` with exactly the labels `labels` (in any order).
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    text.lines().find_map(|l| {
        if l.starts_with('#') {
            return None;
        }
        let (series, rest) = match l.split_once('}') {
            Some((s, rest)) => (s, rest),
            None => l.split_once(' ')?,
        };
        let (n, set) = series.split_once('{').unwrap_or((series, ""));
        if n != name {
            return None;
        }
        let have: Vec<&str> = set.split(',').filter(|p| !p.is_empty()).collect();
        if have.len() != want.len() || !want.iter().all(|w| have.contains(&w.as_str())) {
            return None;
        }
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_found_by_name_and_exact_labels() {
        let text = "# HELP x y\nkubelet_running_pods 3\n\
            m{a=\"1\",b=\"2\"} 7.5 1700000000000\nm{a=\"1\"} 2\n";
        assert_eq!(sample(text, "kubelet_running_pods", &[]), Some(3.0));
        assert_eq!(sample(text, "m", &[("b", "2"), ("a", "1")]), Some(7.5));
        assert_eq!(sample(text, "m", &[("a", "1")]), Some(2.0));
        assert_eq!(sample(text, "m", &[]), None);
        assert_eq!(sample(text, "kubelet_running", &[]), None);
    }
}
