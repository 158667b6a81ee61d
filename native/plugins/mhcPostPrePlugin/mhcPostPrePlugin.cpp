// MhcPostPre: a layer boundary, MhcPost then the next MhcPre on the new residual
// (contract: shared/spec/mhc_ops.md). Kernel call, plugin and creator.
#include "mhcBoundary.h"

#include <string>

namespace mhc
{
namespace plugin
{
namespace
{
char const* const kNAME = "MhcPostPre";

std::vector<FieldSpec> const kFIELDS = {
    {"rms_eps", FieldKind::kFLOAT, FieldRule::kNON_NEGATIVE_FINITE, 1e-6},
    {"pre_eps", FieldKind::kFLOAT, FieldRule::kNON_NEGATIVE_FINITE, 1e-6},
    {"sinkhorn_eps", FieldKind::kFLOAT, FieldRule::kNON_NEGATIVE_FINITE, 1e-6},
    {"post_mult", FieldKind::kFLOAT, FieldRule::kPOSITIVE_FINITE, 2.0},
    {"sinkhorn_iters", FieldKind::kINT, FieldRule::kAT_LEAST_ONE, 20},
};

// Outputs: residual_out [T,n,d], layer_input [T,d], next_post_mix [T,n], next_comb_mix [T,n,n].
constexpr int32_t kNB_OUT = 4;

class MhcPostPrePlugin final : public MhcPlugin<MhcPostPrePlugin, kBNB_IN, kNB_OUT, kBRESIDUAL>
{
public:
    explicit MhcPostPrePlugin(Fields const& fields)
        : MhcPlugin(kNAME, fields)
    {
        mParams.rms_eps = fields.getFloat("rms_eps");
        mParams.pre_eps = fields.getFloat("pre_eps");
        mParams.sinkhorn_eps = fields.getFloat("sinkhorn_eps");
        mParams.post_mult = fields.getFloat("post_mult");
        mParams.sinkhorn_iters = fields.getInt("sinkhorn_iters");
    }

    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override
    {
        if (!checkCounts(nbInputs, nbOutputs, kBNB_IN, kNB_OUT) || !boundaryTypesOk(kNAME, inputTypes))
        {
            return -1;
        }
        outputTypes[0] = inputTypes[kBX];
        outputTypes[1] = inputTypes[kBX];
        outputTypes[2] = nvinfer1::DataType::kFLOAT;
        outputTypes[3] = nvinfer1::DataType::kFLOAT;
        return 0;
    }

    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
        int32_t nbOutputs, nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept override
    {
        if (!checkCounts(nbInputs, nbOutputs, kBNB_IN, kNB_OUT) || !boundaryShapesOk(kNAME, inputs, true))
        {
            return -1;
        }
        nvinfer1::DimsExprs const& res = inputs[kBRESIDUAL];
        outputs[0] = res;
        outputs[1].nbDims = 2;
        outputs[1].d[0] = res.d[0];
        outputs[1].d[1] = res.d[2];
        outputs[2].nbDims = 2;
        outputs[2].d[0] = res.d[0];
        outputs[2].d[1] = res.d[1];
        outputs[3].nbDims = 3;
        outputs[3].d[0] = res.d[0];
        outputs[3].d[1] = res.d[1];
        outputs[3].d[2] = res.d[1];
        return 0;
    }

    bool supportsFormat(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut) const noexcept override
    {
        return boundaryFormatOk(pos, inOut, {kBNB_IN, kBNB_IN + 1}); // residual_out, layer_input
    }

    size_t workspaceSize(int64_t t, int32_t n, int32_t d, mhcDtype_t dtype) const noexcept override
    {
        return mhcPostPreWorkspaceSize(t, n, d, dtype);
    }

    int32_t launch(KernelCall const& c) noexcept override
    {
        auto f = [&](int32_t i) { return static_cast<float const*>(c.inputs[i]); };
        mhcStatus_t const st = mhcPostPre(c.inputs[0], c.inputs[1], f(2), f(3), f(4), f(5), f(6), c.outputs[0],
            c.outputs[1], static_cast<float*>(c.outputs[2]), static_cast<float*>(c.outputs[3]), c.t, c.n, c.d, c.dtype,
            &mParams, c.workspace, workspaceSize(c.t, c.n, c.d, c.dtype), c.stream);
        return st == MHC_STATUS_SUCCESS ? 0 : reportKernelFailure(kNAME, "mhcPostPre", st);
    }

private:
    int32_t checkStatic(nvinfer1::PluginTensorDesc const& res) const noexcept override
    {
        return checkResidualShape(kNAME, res);
    }

    mhcPreParams mParams{};
};
} // namespace

nvinfer1::IPluginCreatorV3One* getMhcPostPreCreator() noexcept
{
    static MhcCreator<MhcPostPrePlugin> creator(kNAME, kFIELDS);
    return &creator;
}

} // namespace plugin
} // namespace mhc
