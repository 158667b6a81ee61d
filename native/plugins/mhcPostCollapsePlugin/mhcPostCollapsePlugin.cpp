// MhcPostCollapse (V4.1): the last boundary, y = MhcCollapse(MhcPost(x, residual,
// post_mix, comb_mix), pre_mix) (contract: shared/spec/mhc_ops.md, "MhcPostCollapse").
// Its table and kernel call; the plugin class and creator are
// common/mhcOpPlugin.h's. No attributes.
#include "mhcOpPlugin.h"

namespace mhc
{
namespace plugin
{
namespace
{
mhcStatus_t launch(NoParams const& /*p*/, KernelCall const& c)
{
    return mhcPostCollapse(
        c.inputs[0], c.inputs[1], c.f32In(2), c.f32In(3), c.f32In(4), c.outputs[0], c.t, c.n, c.d, c.dtype, c.stream);
}
} // namespace

nvinfer1::IPluginCreatorV3One* getMhcPostCollapseCreator() noexcept
{
    static MhcCreator<NoParams> creator({"MhcPostCollapse", "mhcPostCollapse", noFields(),
        {{"x", "Td", kRESIDUAL_DTYPE}, {"residual", "Tnd", kSAME_DTYPE}, {"pre_mix", "Tn"}, {"post_mix", "Tn"},
            {"comb_mix", "Tnn"}},
        {{"y", "Td", kSAME_DTYPE}}},
        noParams, launch);
    return &creator;
}

} // namespace plugin
} // namespace mhc
