//! The false-alarm bounds (derivation in the crate documentation).

/// A window counts as marked when its bound is at most this.
pub(crate) const FOUND_FALSE_ALARM: f64 = 1e-8;

/// Payload bits the union bound ranges over: any 64-bit payload, or (when the decoded
/// payload is a record payload with a valid tag under the detector's key) the 2³² valid ones.
pub(crate) const ANY_PAYLOAD_BITS: u32 = 64;
pub(crate) const RECORD_PAYLOAD_BITS: u32 = 32;

/// Ways a window's verdict is reached: two statistics, each for any payload or for record
/// payloads only. The union bound pays for all four.
const VERDICT_WAYS: f64 = 4.0;

/// ln of the union factor: every hypothesis searched, every payload the decoder might
/// have chosen, every way of reaching the verdict.
fn union_ln(hypotheses: f64, payload_bits: u32) -> f64 {
    (VERDICT_WAYS * hypotheses.max(1.0)).ln() + payload_bits as f64 * std::f64::consts::LN_2
}

/// Bound for the coherent statistic `z` (a sum of terms each sub-Gaussian with variance
/// proxy 1 after normalization): `union · exp(−z²/2)`.
///
/// Neither bound is capped at 1: above 1 it says nothing about false alarms, but it still
/// ranks hypotheses that all fall short (a window's candidates, a candidate's decodings),
/// where a cap would make them tie and leave the choice to search order. Callers cap what
/// they report.
pub(crate) fn coherent_bound(z: f64, hypotheses: f64, payload_bits: u32) -> f64 {
    (union_ln(hypotheses, payload_bits) - z.max(0.0).powi(2) / 2.0).exp()
}

/// Bound for the per-band-pair statistic `t`, a sum of `terms` terms each dominated (in
/// moment generating function) by a unit exponential: the Chernoff bound for a Gamma(m, 1)
/// variable, `(t/m)^m · e^(m − t)` for `t > m` (1 otherwise), times the union factor.
pub(crate) fn incoherent_bound(t: f64, terms: usize, hypotheses: f64, payload_bits: u32) -> f64 {
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
        let union = union_ln(h, 64).exp();
        assert!((coherent_bound(0.0, h, 64) / union - 1.0).abs() < 1e-12);
        assert!(coherent_bound(3.0, h, 64) < coherent_bound(2.0, h, 64));
        assert!(coherent_bound(3.0, h, 64) > 1.0);
        assert!(coherent_bound(12.2, h, 64) > FOUND_FALSE_ALARM);
        assert!(coherent_bound(12.3, h, 64) < FOUND_FALSE_ALARM);
        assert!(coherent_bound(10.5, h, 32) < FOUND_FALSE_ALARM);
        assert!((incoherent_bound(10.0, 16, h, 64) / union - 1.0).abs() < 1e-12);
        assert!(incoherent_bound(40.0, 16, h, 64) < incoherent_bound(30.0, 16, h, 64));
        assert!(incoherent_bound(115.0, 16, h, 64) > FOUND_FALSE_ALARM);
        assert!(incoherent_bound(125.0, 16, h, 64) < FOUND_FALSE_ALARM);
    }
}
