// What the four DeepSeek-V4.1 plugins (MhcMix, MhcCollapse, MhcPostMix,
// MhcPostCollapse) share: MhcPre's fields, rank/weight-shape checks and the
// linear-format rule "these positions follow the residual dtype, the rest are
// float32" (contract: shared/spec/mhc_ops.md, "DeepSeek-V4.1").
#pragma once

#include "mhcPluginCommon.h"

#include <initializer_list>
#include <string>
#include <vector>

namespace mhc
{
namespace plugin
{
// MhcMix's and MhcPostMix's fields: MhcPre's names, kinds and defaults (V4.1-Flash
// writes rms_eps = 1e-20 explicitly; a finite value >= 0 is accepted).
inline std::vector<FieldSpec> const& v41MixFields()
{
    static std::vector<FieldSpec> const fields = {
        {"rms_eps", FieldKind::kFLOAT, FieldRule::kNON_NEGATIVE_FINITE, 1e-6},
        {"pre_eps", FieldKind::kFLOAT, FieldRule::kNON_NEGATIVE_FINITE, 1e-6},
        {"sinkhorn_eps", FieldKind::kFLOAT, FieldRule::kNON_NEGATIVE_FINITE, 1e-6},
        {"post_mult", FieldKind::kFLOAT, FieldRule::kPOSITIVE_FINITE, 2.0},
        {"sinkhorn_iters", FieldKind::kINT, FieldRule::kAT_LEAST_ONE, 20},
    };
    return fields;
}

inline mhcPreParams v41MixParams(Fields const& f)
{
    mhcPreParams p{};
    p.rms_eps = f.getFloat("rms_eps");
    p.pre_eps = f.getFloat("pre_eps");
    p.sinkhorn_eps = f.getFloat("sinkhorn_eps");
    p.post_mult = f.getFloat("post_mult");
    p.sinkhorn_iters = f.getInt("sinkhorn_iters");
    return p;
}

// Every input has the rank in `ranks`; logs `expected` otherwise.
inline bool v41RanksOk(char const* name, nvinfer1::DimsExprs const* in, std::initializer_list<int32_t> ranks,
    char const* expected) noexcept
{
    int32_t i = 0;
    for (int32_t r : ranks)
    {
        if (in[i++].nbDims != r)
        {
            logError(std::string(name) + ": expected " + expected);
            return false;
        }
    }
    return true;
}

// hc_fn [(2+n)*n, n*d] against residual [T, n, d], once both are build-time constants.
inline bool v41WeightsOk(char const* name, nvinfer1::DimsExprs const& res, nvinfer1::DimsExprs const& fn) noexcept
{
    if (!(res.d[1]->isConstant() && res.d[2]->isConstant() && fn.d[0]->isConstant() && fn.d[1]->isConstant()))
    {
        return true;
    }
    int64_t const n = res.d[1]->getConstantValue();
    int64_t const d = res.d[2]->getConstantValue();
    if (fn.d[0]->getConstantValue() != (2 + n) * n || fn.d[1]->getConstantValue() != n * d)
    {
        logError(std::string(name) + ": hc_fn is [" + std::to_string(fn.d[0]->getConstantValue()) + ", "
            + std::to_string(fn.d[1]->getConstantValue()) + "], expected [(2+n)*n, n*d] = ["
            + std::to_string((2 + n) * n) + ", " + std::to_string(n * d) + "] for residual n=" + std::to_string(n)
            + ", d=" + std::to_string(d));
        return false;
    }
    return true;
}

// x [T, d] against residual [T, n, d], once both d are constants.
inline bool v41XOk(char const* name, nvinfer1::DimsExprs const& x, nvinfer1::DimsExprs const& res) noexcept
{
    if (x.d[1]->isConstant() && res.d[2]->isConstant() && x.d[1]->getConstantValue() != res.d[2]->getConstantValue())
    {
        logError(std::string(name) + ": x has d=" + std::to_string(x.d[1]->getConstantValue())
            + " but residual d=" + std::to_string(res.d[2]->getConstantValue()));
        return false;
    }
    return true;
}

// [T, n, d] / [T, d] / [T, n] / [T, n, n] from residual's dims.
inline void v41SetDims(nvinfer1::DimsExprs& out, nvinfer1::DimsExprs const& res, char const* pattern) noexcept
{
    out.nbDims = 0;
    for (char const* p = pattern; *p; ++p)
    {
        out.d[out.nbDims++] = *p == 'T' ? res.d[0] : (*p == 'n' ? res.d[1] : res.d[2]);
    }
}

// Linear only; position `first` picks a residual dtype; `follow` positions share it; the rest are float32.
inline bool v41FormatOk(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t first,
    std::initializer_list<int32_t> follow) noexcept
{
    nvinfer1::PluginTensorDesc const& t = inOut[pos].desc;
    if (t.format != nvinfer1::TensorFormat::kLINEAR)
    {
        return false;
    }
    if (pos == first)
    {
        return isResidualType(t.type);
    }
    for (int32_t p : follow)
    {
        if (p == pos)
        {
            return t.type == inOut[first].desc.type;
        }
    }
    return t.type == nvinfer1::DataType::kFLOAT;
}

// The residual dtype of `a` and `b` (x and residual) agree; logs otherwise.
inline bool v41TypesOk(char const* name, nvinfer1::DataType a, nvinfer1::DataType b) noexcept
{
    if (isResidualType(a) && a == b)
    {
        return true;
    }
    logError(std::string(name) + ": x and residual must share one of float32, float16, bfloat16, got "
        + dataTypeName(a) + " and " + dataTypeName(b));
    return false;
}
} // namespace plugin
} // namespace mhc
