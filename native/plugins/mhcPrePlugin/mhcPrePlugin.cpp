// MhcPre: residual [T,n,d] -> layer_input [T,d], post_mix [T,n], comb_mix [T,n,n]
// (contract: shared/spec/mhc_ops.md). Its fields (which three more ops share),
// table and kernel call; the plugin class and creator are common/mhcOpPlugin.h's.
#include "mhcOpPlugin.h"

namespace mhc
{
namespace plugin
{
std::vector<FieldSpec> const& preFields()
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

mhcPreParams preParams(Fields const& f)
{
    mhcPreParams p{};
    p.rms_eps = f.getFloat("rms_eps");
    p.pre_eps = f.getFloat("pre_eps");
    p.sinkhorn_eps = f.getFloat("sinkhorn_eps");
    p.post_mult = f.getFloat("post_mult");
    p.sinkhorn_iters = f.getInt("sinkhorn_iters");
    return p;
}

namespace
{
mhcStatus_t launch(mhcPreParams const& p, KernelCall const& c)
{
    return mhcPre(c.inputs[0], c.f32In(1), c.f32In(2), c.f32In(3), c.outputs[0], c.f32Out(1), c.f32Out(2), c.t, c.n,
        c.d, c.dtype, &p, c.workspace, c.workspaceSize, c.stream);
}
} // namespace

nvinfer1::IPluginCreatorV3One* getMhcPreCreator() noexcept
{
    static MhcCreator<mhcPreParams> creator({"MhcPre", "mhcPre", preFields(),
        {{"residual", "Tnd", kRESIDUAL_DTYPE}, {"hc_fn", "MK"}, {"hc_scale", "3"}, {"hc_base", "M"}},
        {{"layer_input", "Td", kSAME_DTYPE}, {"post_mix", "Tn"}, {"comb_mix", "Tnn"}}, mhcPreWorkspaceSize},
        preParams, launch);
    return &creator;
}

} // namespace plugin
} // namespace mhc
