// topk: the MoE routing of one token from its router logits, shared by moe_route and the
// router of rms_norm (prepended to both, as qblock.wgsl is to the matmuls), so that both
// choose alike: p = softmax(logits), the K largest (descending, lowest index on ties), and
// w_j = p_j / Σ_j p_j. One thread routes one row.
//
// The including kernel defines K and two accessors:
//   route_logit(row, e): the logit of expert e for `row`;
//   route_put(row, j, id, w): stores choice j of `row`.

fn route_row(row: u32, experts: u32) {
    var m = route_logit(row, 0u);
    for (var e = 1u; e < experts; e++) {
        m = max(m, route_logit(row, e));
    }
    var z = 0.0;
    for (var e = 0u; e < experts; e++) {
        z += exp(route_logit(row, e) - m);
    }
    var chosen: array<u32, K>;
    var probs: array<f32, K>;
    var total = 0.0;
    for (var j = 0u; j < K; j++) {
        var best = 0u;
        var best_logit = -3.0e38;
        var found = false;
        for (var e = 0u; e < experts; e++) {
            var taken = false;
            for (var i = 0u; i < j; i++) {
                taken = taken || chosen[i] == e;
            }
            let l = route_logit(row, e);
            if !taken && (!found || l > best_logit) {
                best = e;
                best_logit = l;
                found = true;
            }
        }
        chosen[j] = best;
        probs[j] = exp(best_logit - m) / z;
        total += probs[j];
    }
    for (var j = 0u; j < K; j++) {
        route_put(row, j, chosen[j], probs[j] / total);
    }
}
