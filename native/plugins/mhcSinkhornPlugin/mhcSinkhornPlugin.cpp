// MhcSinkhorn: logits [T,n,n] float32 -> comb [T,n,n] float32
// (contract: shared/spec/mhc_ops.md). Its table, shape checks and kernel call;
// the plugin class and creator are common/mhcOpPlugin.h's.
#include "mhcOpPlugin.h"

#include <string>

namespace mhc
{
namespace plugin
{
namespace
{
char const* const kNAME = "MhcSinkhorn";

struct SinkhornParams
{
    int32_t iters;
    float eps;
};

std::vector<FieldSpec> const& sinkhornFields()
{
    static std::vector<FieldSpec> const fields = {
        {"iters", FieldKind::kINT, FieldRule::kAT_LEAST_ONE, 20},
        {"eps", FieldKind::kFLOAT, FieldRule::kNON_NEGATIVE_FINITE, 1e-6},
    };
    return fields;
}

SinkhornParams readParams(Fields const& f)
{
    return {f.getInt("iters"), f.getFloat("eps")};
}

// No residual: the logits are checked instead, square per token.
bool checkShapes(nvinfer1::DimsExprs const* inputs)
{
    nvinfer1::DimsExprs const& in = inputs[0];
    if (in.nbDims != 3)
    {
        logError(std::string(kNAME) + ": logits must be [T, n, n], got rank " + std::to_string(in.nbDims));
        return false;
    }
    if (in.d[1]->isConstant() && in.d[2]->isConstant() && in.d[1]->getConstantValue() != in.d[2]->getConstantValue())
    {
        logError(std::string(kNAME) + ": logits must be square per token, got [T, "
            + std::to_string(in.d[1]->getConstantValue()) + ", " + std::to_string(in.d[2]->getConstantValue()) + "]");
        return false;
    }
    return true;
}

int32_t checkFixed(nvinfer1::PluginTensorDesc const& in)
{
    nvinfer1::Dims const& d = in.dims;
    if (d.nbDims != 3 || d.d[1] <= 0 || d.d[1] != d.d[2] || d.d[1] > MHC_MAX_STREAMS)
    {
        logError(
            std::string(kNAME) + ": logits must be [T, n, n] with a fixed n in 1.." + std::to_string(MHC_MAX_STREAMS));
        return -1;
    }
    return 0;
}

mhcStatus_t launch(SinkhornParams const& p, KernelCall const& c)
{
    return mhcSinkhorn(c.f32In(0), c.f32Out(0), c.t, c.n, p.iters, p.eps, c.stream);
}
} // namespace

nvinfer1::IPluginCreatorV3One* getMhcSinkhornCreator() noexcept
{
    static MhcCreator<SinkhornParams> creator(
        {kNAME, "mhcSinkhorn", sinkhornFields(), {{"logits", "Tnn"}}, {{"comb", "Tnn"}}, nullptr, checkShapes, checkFixed},
        readParams, launch);
    return &creator;
}

} // namespace plugin
} // namespace mhc
