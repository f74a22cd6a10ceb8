"""The Triton kernel behind ``actpat.triton_kernels`` (which documents what it computes). Imported
only when a kernel runs: importing triton costs time, and TRITON_INTERPRET must be set before."""

import triton
import triton.language as tl


@triton.jit
def reduce_kernel(
    g_ptr, p_ptr, q_ptr, w_ptr, acc_ptr, lengths_ptr,
    thr_ptr, rel_ptr,
    row_sign_ptr, col_sign_ptr, strip_ptr, group_col_ptr,
    l1_ptr, l2_ptr, above_ptr, zeros_ptr, sketch_ptr, counts_ptr,
    n_batch, rows, cols, k,
    s_gb, s_gr, s_gc, s_pb, s_pt, s_pr, s_qb, s_qt, s_qc, s_wr, s_wc,
    N_THR: tl.constexpr, N_REL: tl.constexpr, FORM: tl.constexpr, COUNT_ONLY: tl.constexpr,
    UPCAST: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr, GROUP: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    tile = pid_m * tl.num_programs(1) + pid_n
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    in_m = rm < rows
    in_n = rn < cols
    inside = in_m[:, None] & in_n[None, :]
    w = tl.load(w_ptr + rm[:, None] * s_wr + rn[None, :] * s_wc, mask=inside, other=0.0).to(tl.float32)
    if not COUNT_ONLY:
        acc_ptrs = acc_ptr + rm[:, None] * cols + rn[None, :]
        acc = tl.load(acc_ptrs, mask=inside, other=0.0)
        # the sketch (actpat.sketch): each weight's sign; the tile's rows rotated left by r mod G
        # inside each block of G columns (a gather), so that column j holds group column j of its
        # strip; each strip's bucket code, and each group column's
        row_sign = tl.load(row_sign_ptr + rm, mask=in_m, other=0.0)
        col_sign = tl.load(col_sign_ptr + rn, mask=in_n, other=0.0)
        sign = row_sign[:, None] * col_sign[None, :]
        j = tl.arange(0, BLOCK_N)
        rotation = (j // GROUP * GROUP)[None, :] + ((j % GROUP)[None, :] + (rm % GROUP)[:, None]) % GROUP
        strips = pid_m * (BLOCK_M // GROUP) + tl.arange(0, BLOCK_M // GROUP)
        in_strip = strips * GROUP < rows
        strip_code = tl.load(strip_ptr + strips, mask=in_strip, other=0)
        width = (cols + GROUP - 1) // GROUP * GROUP
        in_width = rn < width
        group_col = tl.load(group_col_ptr + rn, mask=in_width, other=0)
        bucket = (strip_code[:, None] + group_col[None, :]) % k
    # each sample's operands: pointers moved on by a sample's stride (b · stride in int32 would pass
    # 2^31 at batch 48 of a 7B down_proj's gradients)
    g_b, p_b, q_b = g_ptr, p_ptr, q_ptr
    for b in range(n_batch):
        if FORM:
            g = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            length = tl.load(lengths_ptr + b)
            for t0 in range(0, length, BLOCK_T):
                rt = t0 + tl.arange(0, BLOCK_T)
                in_t = rt < length
                p = tl.load(p_b + rm[:, None] * s_pr + rt[None, :] * s_pt,
                            mask=in_m[:, None] & in_t[None, :], other=0.0)
                q = tl.load(q_b + rt[:, None] * s_qt + rn[None, :] * s_qc,
                            mask=in_t[:, None] & in_n[None, :], other=0.0)
                if UPCAST:
                    p = p.to(tl.float32)
                    q = q.to(tl.float32)
                if IEEE:
                    g += tl.dot(p, q, input_precision="ieee")
                else:
                    g += tl.dot(p, q)
        else:
            g = tl.load(g_b + rm[:, None] * s_gr + rn[None, :] * s_gc, mask=inside, other=0.0)
        s = tl.abs(g * w)
        if COUNT_ONLY:
            for t in tl.static_range(N_REL):
                threshold = tl.load(rel_ptr + b * N_REL + t)
                n = tl.sum(tl.sum((inside & (s > threshold)).to(tl.int32), axis=1), axis=0)
                tl.store(counts_ptr + (tile * n_batch + b) * N_REL + t, n)
        else:
            acc += s
            part = tile * n_batch + b
            tl.store(l1_ptr + part, tl.sum(tl.sum(s, axis=1), axis=0))
            tl.store(l2_ptr + part, tl.sum(tl.sum(s * s, axis=1), axis=0))
            n_zero = tl.sum(tl.sum((inside & (s == 0.0)).to(tl.int32), axis=1), axis=0)
            tl.store(zeros_ptr + part, n_zero)
            for t in tl.static_range(N_THR):
                threshold = tl.load(thr_ptr + t)
                n = tl.sum(tl.sum((s > threshold).to(tl.int32), axis=1), axis=0)
                tl.store(above_ptr + part * N_THR + t, n)
            rotated = tl.gather(s * sign, rotation, axis=1)
            per_group = tl.sum(tl.reshape(rotated, (BLOCK_M // GROUP, GROUP, BLOCK_N)), axis=1)
            tl.atomic_add(sketch_ptr + b * k + bucket, per_group, mask=in_strip[:, None] & in_width[None, :])
        g_b += s_gb
        p_b += s_pb
        q_b += s_qb
    if not COUNT_ONLY:
        tl.store(acc_ptrs, acc, mask=inside)
