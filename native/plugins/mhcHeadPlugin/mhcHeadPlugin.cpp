// MhcHead: residual [T,n,d] -> y [T,d] (contract: shared/spec/mhc_ops.md).
// Its fields (MhcPostHead's too), table and kernel call; the plugin class and
// creator are common/mhcOpPlugin.h's.
#include "mhcOpPlugin.h"

namespace mhc
{
namespace plugin
{
std::vector<FieldSpec> const& headFields()
{
    static std::vector<FieldSpec> const fields = {
        {"rms_eps", FieldKind::kFLOAT, FieldRule::kNON_NEGATIVE_FINITE, 1e-6},
        {"eps", FieldKind::kFLOAT, FieldRule::kNON_NEGATIVE_FINITE, 1e-6},
    };
    return fields;
}

mhcHeadParams headParams(Fields const& f)
{
    mhcHeadParams p{};
    p.rms_eps = f.getFloat("rms_eps");
    p.eps = f.getFloat("eps");
    return p;
}

namespace
{
mhcStatus_t launch(mhcHeadParams const& p, KernelCall const& c)
{
    return mhcHead(c.inputs[0], c.f32In(1), c.f32In(2), c.f32In(3), c.outputs[0], c.t, c.n, c.d, c.dtype, &p,
        c.workspace, c.workspaceSize, c.stream);
}
} // namespace

nvinfer1::IPluginCreatorV3One* getMhcHeadCreator() noexcept
{
    static MhcCreator<mhcHeadParams> creator({"MhcHead", "mhcHead", headFields(),
        {{"residual", "Tnd", kRESIDUAL_DTYPE}, {"hc_fn", "nK"}, {"hc_scale", "1"}, {"hc_base", "n"}},
        {{"y", "Td", kSAME_DTYPE}}, mhcHeadWorkspaceSize},
        headParams, launch);
    return &creator;
}

} // namespace plugin
} // namespace mhc
