// MhcSinkhorn: logits [T,n,n] float32 -> comb [T,n,n] float32
// (contract: shared/spec/mhc_ops.md). Its table and kernel call;
// the plugin class and creator are common/mhcOpPlugin.h's.
#include "mhcOpPlugin.h"

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

mhcStatus_t launch(SinkhornParams const& p, KernelCall const& c)
{
    return mhcSinkhorn(c.f32In(0), c.f32Out(0), c.t, c.n, p.iters, p.eps, c.stream);
}
} // namespace

nvinfer1::IPluginCreatorV3One* getMhcSinkhornCreator() noexcept
{
    static MhcCreator<SinkhornParams> creator(
        {kNAME, "mhcSinkhorn", sinkhornFields(), {{"logits", "Tnn"}}, {{"comb", "Tnn"}}},
        readParams, launch);
    return &creator;
}

} // namespace plugin
} // namespace mhc
