// MhcMix (V4.1): residual [T,n,d] -> pre_mix [T,n], post_mix [T,n], comb_mix [T,n,n]
// (contract: shared/spec/mhc_ops.md, "MhcMix"). Its table and kernel call; the
// plugin class and creator are common/mhcOpPlugin.h's.
#include "mhcOpPlugin.h"

namespace mhc
{
namespace plugin
{
namespace
{
mhcStatus_t launch(mhcPreParams const& p, KernelCall const& c)
{
    return mhcMix(c.inputs[0], c.f32In(1), c.f32In(2), c.f32In(3), c.f32Out(0), c.f32Out(1), c.f32Out(2), c.t, c.n,
        c.d, c.dtype, &p, c.workspace, c.workspaceSize, c.stream);
}
} // namespace

nvinfer1::IPluginCreatorV3One* getMhcMixCreator() noexcept
{
    // MhcPre's fields: V4.1 keeps MhcPre's attributes on the mixes op.
    static MhcCreator<mhcPreParams> creator({"MhcMix", "mhcMix", preFields(),
        {{"residual", "Tnd", kRESIDUAL_DTYPE}, {"hc_fn", "MK"}, {"hc_scale", "3"}, {"hc_base", "M"}},
        {{"pre_mix", "Tn"}, {"post_mix", "Tn"}, {"comb_mix", "Tnn"}}, mhcMixWorkspaceSize},
        preParams, launch);
    return &creator;
}

} // namespace plugin
} // namespace mhc
