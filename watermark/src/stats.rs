//! The false-alarm bounds (derivation in the crate documentation).

/// A window counts as marked when its bound is at most this.
pub(crate) const FOUND_FALSE_ALARM: f64 = 1e-8;

/// Payload bits the union bound ranges over: any 64-bit payload, or (when the decoded
/// payload is a record payload with a valid tag under the detector's key) the 2³² valid ones.
/// A detector given the payloads its deployment issued also judges those, over
/// `log2(count)` bits ([`issued_payload_bits`]).
pub(crate) const ANY_PAYLOAD_BITS: f64 = 64.0;
pub(crate) const RECORD_PAYLOAD_BITS: f64 = 32.0;

/// The bits the union bound ranges over when a payload is judged among `count` issued ones.
pub(crate) fn issued_payload_bits(count: usize) -> f64 {
    (count.max(1) as f64).log2()
}

/// Ways a window's verdict is reached: two statistics, each for any payload, for record
/// payloads only, or for the issued payloads only. The union bound pays for all six, whether
/// or not a detector holds issued payloads, so a score means the same either way.
const VERDICT_WAYS: f64 = 6.0;

/// ln of the union factor: every hypothesis searched, every payload the decoder might
/// have chosen, every way of reaching the verdict.
fn union_ln(hypotheses: f64, payload_bits: f64) -> f64 {
    (VERDICT_WAYS * hypotheses.max(1.0)).ln() + payload_bits * std::f64::consts::LN_2
}

/// Bound for the coherent statistic `z` (a sum of terms each sub-Gaussian with variance
/// proxy 1 after normalization): `union · exp(−z²/2)`.
///
/// Neither bound is capped at 1: above 1 it says nothing about false alarms, but it still
/// ranks hypotheses that all fall short (a window's candidates, a candidate's decodings),
/// where a cap would make them tie and leave the choice to search order. Callers cap what
/// they report.
pub(crate) fn coherent_bound(z: f64, hypotheses: f64, payload_bits: f64) -> f64 {
    (union_ln(hypotheses, payload_bits) - z.max(0.0).powi(2) / 2.0).exp()
}

/// Bound for the per-band-pair statistic `t`, a sum of `terms` terms each dominated (in
/// moment generating function) by a unit exponential: the Chernoff bound for a Gamma(m, 1)
/// variable, `(t/m)^m · e^(m − t)` for `t > m` (1 otherwise), times the union factor.
pub(crate) fn incoherent_bound(t: f64, terms: usize, hypotheses: f64, payload_bits: f64) -> f64 {
    let m = terms as f64;
    let chernoff_ln = if terms == 0 || t <= m {
        0.0
    } else {
        m * (t / m).ln() + m - t
    };
    (union_ln(hypotheses, payload_bits) + chernoff_ln).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_fall_with_the_statistic() {
        let h = 62_400.0;
        // Uncapped: the union factor itself when the statistic shows nothing.
        let union = union_ln(h, 64.0).exp();
        assert!((coherent_bound(0.0, h, 64.0) / union - 1.0).abs() < 1e-12);
        assert!(coherent_bound(3.0, h, 64.0) < coherent_bound(2.0, h, 64.0));
        assert!(coherent_bound(3.0, h, 64.0) > 1.0);
        assert!(coherent_bound(12.2, h, 64.0) > FOUND_FALSE_ALARM);
        assert!(coherent_bound(12.3, h, 64.0) < FOUND_FALSE_ALARM);
        assert!(coherent_bound(10.5, h, 32.0) < FOUND_FALSE_ALARM);
        assert!((incoherent_bound(10.0, 16, h, 64.0) / union - 1.0).abs() < 1e-12);
        assert!(incoherent_bound(40.0, 16, h, 64.0) < incoherent_bound(30.0, 16, h, 64.0));
        assert!(incoherent_bound(115.0, 16, h, 64.0) > FOUND_FALSE_ALARM);
        assert!(incoherent_bound(125.0, 16, h, 64.0) < FOUND_FALSE_ALARM);
    }
}
