//! Resource quantities as Kubernetes writes them, for `augur submit --cpu` and
//! `--memory`: CPU in cores (`0.5`, `2`) or millicores (`250m`), memory in
//! bytes with a decimal (`k`, `M`, `G`, `T`, `P`, `E`) or binary (`Ki`, `Mi`,
//! `Gi`, `Ti`, `Pi`, `Ei`) suffix (`64Mi`, `2G`, `1.5Gi`). Pure parsing, no
//! I/O; refusals say what was wrong.

/// Why a quantity was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{given:?}: {reason}")]
pub struct QuantityError {
    pub given: String,
    pub reason: String,
}

fn refuse(given: &str, reason: impl Into<String>) -> QuantityError {
    QuantityError {
        given: given.to_string(),
        reason: reason.into(),
    }
}

/// Splits `text` into a non-negative decimal number and its suffix.
fn number_and_suffix(text: &str) -> Result<(f64, &str), QuantityError> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, suffix) = trimmed.split_at(split);
    if number.is_empty() || number.starts_with('.') && number.len() == 1 {
        return Err(refuse(text, "expected a number, e.g. 250m, 0.5, 64Mi, 2G"));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| refuse(text, "expected a number, e.g. 250m, 0.5, 64Mi, 2G"))?;
    if !value.is_finite() {
        return Err(refuse(text, "not a finite number"));
    }
    Ok((value, suffix))
}

/// CPU in millicores: `250m` → 250, `0.5` → 500, `2` → 2000.
pub fn parse_cpu_millis(text: &str) -> Result<u64, QuantityError> {
    let (value, suffix) = number_and_suffix(text)?;
    let millis = match suffix {
        "" => value * 1000.0,
        "m" => value,
        other => {
            return Err(refuse(
                text,
                format!("unknown CPU unit {other:?}: write cores (0.5, 2) or millicores (250m)"),
            ))
        }
    };
    if millis.fract() != 0.0 {
        return Err(refuse(text, "finer than a millicore"));
    }
    if millis > u64::MAX as f64 / 2.0 {
        return Err(refuse(text, "too large"));
    }
    Ok(millis as u64)
}

/// Memory in bytes: `64Mi` → 67108864, `2G` → 2000000000, `512` → 512.
pub fn parse_memory_bytes(text: &str) -> Result<u64, QuantityError> {
    let (value, suffix) = number_and_suffix(text)?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        other => {
            return Err(refuse(
                text,
                format!(
                    "unknown memory unit {other:?}: write bytes with k, M, G, T (powers of 1000) \
                     or Ki, Mi, Gi, Ti (powers of 1024), e.g. 64Mi"
                ),
            ))
        }
    };
    let bytes = value * factor;
    if bytes.fract() != 0.0 {
        return Err(refuse(text, "not a whole number of bytes"));
    }
    if bytes > u64::MAX as f64 / 2.0 {
        return Err(refuse(text, "too large"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cpu_in_cores_and_millicores() {
        assert_eq!(parse_cpu_millis("250m"), Ok(250));
        assert_eq!(parse_cpu_millis("0.5"), Ok(500));
        assert_eq!(parse_cpu_millis("2"), Ok(2000));
        assert_eq!(parse_cpu_millis(" 1.25 "), Ok(1250));
        for bad in ["", "m", "-1", "0.0005", "1x", "1Gi", "abc", ".", "1e3"] {
            assert!(parse_cpu_millis(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn memory_with_decimal_and_binary_suffixes() {
        assert_eq!(parse_memory_bytes("64Mi"), Ok(64 * 1024 * 1024));
        assert_eq!(parse_memory_bytes("2G"), Ok(2_000_000_000));
        assert_eq!(parse_memory_bytes("512"), Ok(512));
        assert_eq!(parse_memory_bytes("1.5Gi"), Ok(1536 * 1024 * 1024));
        assert_eq!(parse_memory_bytes("1k"), Ok(1000));
        for bad in ["", "Mi", "-1Mi", "1.5", "1m", "1KB", "1mi", "2g", "1e9"] {
            assert!(parse_memory_bytes(bad).is_err(), "{bad:?} accepted");
        }
        let err = parse_memory_bytes("2GB").expect_err("GB is not a unit");
        assert!(err.to_string().contains("\"2GB\""), "{err}");
    }

    proptest! {
        #[test]
        fn whole_quantities_round_trip(n in 0u64..1_000_000, unit in 0usize..4) {
            let (suffix, factor) = [("", 1u64), ("Ki", 1024), ("Mi", 1 << 20), ("G", 1_000_000_000)][unit];
            prop_assert_eq!(parse_memory_bytes(&format!("{n}{suffix}")), Ok(n * factor));
            prop_assert_eq!(parse_cpu_millis(&format!("{n}m")), Ok(n));
            prop_assert_eq!(parse_cpu_millis(&format!("{n}")), Ok(n * 1000));
        }

        #[test]
        fn any_text_is_parsed_or_refused_without_panicking(text in ".{0,12}") {
            let _ = parse_memory_bytes(&text);
            let _ = parse_cpu_millis(&text);
        }
    }
}
