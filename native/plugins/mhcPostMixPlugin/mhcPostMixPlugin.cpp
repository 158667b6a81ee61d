// MhcPostMix (V4.1): the single-pass boundary, MhcPost of site k, the collapse with
// site k's pre and the mixes of site k+1 (contract: shared/spec/mhc_ops.md,
// "MhcPostMix"). Its table and kernel call; the plugin class and creator are
// common/mhcOpPlugin.h's.
#include "mhcOpPlugin.h"

namespace mhc
{
namespace plugin
{
namespace
{
mhcStatus_t launch(mhcPreParams const& p, KernelCall const& c)
{
    return mhcPostMix(c.inputs[0], c.inputs[1], c.f32In(2), c.f32In(3), c.f32In(4), c.f32In(5), c.f32In(6),
        c.f32In(7), c.outputs[0], c.outputs[1], c.f32Out(2), c.f32Out(3), c.f32Out(4), c.t, c.n, c.d, c.dtype, &p,
        c.workspace, c.workspaceSize, c.stream);
}
} // namespace

nvinfer1::IPluginCreatorV3One* getMhcPostMixCreator() noexcept
{
    static MhcCreator<mhcPreParams> creator({"MhcPostMix", "mhcPostMix", preFields(),
        {{"x", "Td", kRESIDUAL_DTYPE}, {"residual", "Tnd", kSAME_DTYPE}, {"pre_mix", "Tn"}, {"post_mix", "Tn"},
            {"comb_mix", "Tnn"}, {"hc_fn", "MK"}, {"hc_scale", "3"}, {"hc_base", "M"}},
        {{"residual_out", "Tnd", kSAME_DTYPE}, {"layer_input", "Td", kSAME_DTYPE}, {"next_pre_mix", "Tn"},
            {"next_post_mix", "Tn"}, {"next_comb_mix", "Tnn"}},
        mhcPostMixWorkspaceSize},
        preParams, launch);
    return &creator;
}

} // namespace plugin
} // namespace mhc
