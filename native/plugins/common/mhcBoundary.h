// What MhcPostPre and MhcPostHead share: the post half's inputs (x, residual,
// post_mix, comb_mix) followed by the next op's weights (hc_fn, hc_scale, hc_base).
#pragma once

#include "mhcPluginCommon.h"

#include <string>

namespace mhc
{
namespace plugin
{
// Input positions of a boundary op.
constexpr int32_t kBX = 0;
constexpr int32_t kBRESIDUAL = 1;
constexpr int32_t kBFN = 4;
constexpr int32_t kBNB_IN = 7;

// x and residual share a residual dtype; logs and returns false otherwise.
inline bool boundaryTypesOk(char const* name, nvinfer1::DataType const* inputTypes) noexcept
{
    if (isResidualType(inputTypes[kBX]) && inputTypes[kBRESIDUAL] == inputTypes[kBX])
    {
        return true;
    }
    logError(std::string(name) + ": x and residual must share one of float32, float16, bfloat16, got "
        + dataTypeName(inputTypes[kBX]) + " and " + dataTypeName(inputTypes[kBRESIDUAL]));
    return false;
}

// Ranks of the seven inputs, and hc_fn [rows(n), n*d] once n, d and hc_fn are known.
// rowsPerN: (2+n)*n for the pre half, n for the head.
inline bool boundaryShapesOk(char const* name, nvinfer1::DimsExprs const* in, bool preHalf) noexcept
{
    if (in[0].nbDims != 2 || in[1].nbDims != 3 || in[2].nbDims != 2 || in[3].nbDims != 3 || in[4].nbDims != 2
        || in[5].nbDims != 1 || in[6].nbDims != 1)
    {
        logError(std::string(name)
            + ": expected x [T,d], residual [T,n,d], post_mix [T,n], comb_mix [T,n,n], hc_fn [M,K], hc_scale, "
              "hc_base [M]");
        return false;
    }
    nvinfer1::DimsExprs const& res = in[kBRESIDUAL];
    nvinfer1::DimsExprs const& fn = in[kBFN];
    if (res.d[1]->isConstant() && res.d[2]->isConstant() && fn.d[0]->isConstant() && fn.d[1]->isConstant())
    {
        int64_t const n = res.d[1]->getConstantValue();
        int64_t const d = res.d[2]->getConstantValue();
        int64_t const rows = preHalf ? (2 + n) * n : n;
        if (fn.d[0]->getConstantValue() != rows || fn.d[1]->getConstantValue() != n * d)
        {
            logError(std::string(name) + ": hc_fn is [" + std::to_string(fn.d[0]->getConstantValue()) + ", "
                + std::to_string(fn.d[1]->getConstantValue()) + "], expected [" + std::to_string(rows) + ", "
                + std::to_string(n * d) + "] for residual n=" + std::to_string(n) + ", d=" + std::to_string(d));
            return false;
        }
    }
    return true;
}

// Linear only; x picks the residual dtype, `residualOutputs` positions follow it.
inline bool boundaryFormatOk(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut,
    std::initializer_list<int32_t> residualOutputs) noexcept
{
    nvinfer1::PluginTensorDesc const& t = inOut[pos].desc;
    if (t.format != nvinfer1::TensorFormat::kLINEAR)
    {
        return false;
    }
    if (pos == kBX)
    {
        return isResidualType(t.type);
    }
    bool follows = pos == kBRESIDUAL;
    for (int32_t p : residualOutputs)
    {
        follows = follows || p == pos;
    }
    return follows ? t.type == inOut[kBX].desc.type : t.type == nvinfer1::DataType::kFLOAT;
}
} // namespace plugin
} // namespace mhc
